"""Structured log lines: the JSON formatter, with the trace it was written in."""

from __future__ import annotations

import json
import logging

import pytest

from prediction_service import logs, tracing

pytestmark = pytest.mark.unit


def test_a_json_line_names_the_span_it_was_written_in() -> None:
    """The formatter alone, with the SDK in this process (an exporter nobody listens to)."""
    assert not tracing.enabled
    assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    record = logging.LogRecord(
        "prediction_service.x", logging.INFO, __file__, 1, "hi %s", ("there",), None
    )
    record.model, record.version = "iris", "3"
    token = logs.request_id.set("req-1")
    try:
        with tracing.span("outer") as s:
            line = json.loads(logs.JsonFormatter().format(record))
            context = s.get_span_context()
    finally:
        logs.request_id.reset(token)
        tracing.shutdown()
    assert line["message"] == "hi there" and line["level"] == "INFO"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert (line["request_id"], line["model"], line["version"]) == ("req-1", "iris", "3")
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted({})

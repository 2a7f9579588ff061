"""OpenTelemetry tracing: opt-in by the standard ``OTEL_*`` variables, free when off.

``configure()`` installs the SDK with an OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, unless ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``. The SDK itself reads the rest: ``OTEL_TRACES_SAMPLER`` and
``_ARG`` (default: parent-based, always on), ``OTEL_SERVICE_NAME`` (default here:
prediction-service), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*`` and the exporter's headers
and timeout. Until it is on, ``enabled`` is False and every hook in the request path is one
test of it.

A request's spans. The transport starts a server span that continues the caller's W3C
``traceparent`` (``start``) and makes it this request's ``Trace`` (a context variable);
the prediction service notes on it when the model ran and when the log took the rows; when
the reply is written, ``finish`` adds the children ``decode``, ``predict`` (model, version,
arm, rows), ``log.enqueue`` and ``encode`` with those times, and ends the span. Children
made after the fact cost one ``time_ns`` per mark on the way; a request the sampler leaves
out costs its ids and nothing more (measured in ``bench/tracing_cost.py``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

enabled = False
_tracer: Any = None
_provider: Any = None
_current: ContextVar[Trace | None] = ContextVar("prediction_service_trace", default=None)
_SERVICE = "prediction-service"


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and nothing turning it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on if the environment asks for it (once per process); whether it is on."""
    global enabled, _tracer, _provider, _decide
    if enabled or not wanted(environ):
        return enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class Ids(RandomIdGenerator):
        """Random ids, except the trace id ``start`` sampled a root span on (per thread)."""

        def generate_trace_id(self) -> int:
            chosen = getattr(_next_trace_id, "value", None)
            if chosen is None:
                return super().generate_trace_id()
            _next_trace_id.value = None
            return int(chosen)

    named = "OTEL_SERVICE_NAME" in environ or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": _SERVICE})
    # The sampler from OTEL_TRACES_SAMPLER (and _ARG), as the SDK reads it by default.
    _provider = TracerProvider(resource=resource, id_generator=Ids())
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("prediction_service")
    _decide = _sampling(environ)
    _bind()
    enabled = True
    log.info("tracing on: OTLP to %s", environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))  # fmt: skip
    return True


_EMPTY: Any = None
_PROPAGATOR: Any = None
_decide: Callable[[tuple[int, bool] | None, int], bool] | None = None
_next_trace_id = threading.local()
_SERVER: Any = None
_Status: Any = None
_ERROR: Any = None
_set_span_in_context: Any = None
_get_current_span: Any = None


def _bind() -> None:
    """The API's names the request path uses, looked up once (not imported per call)."""
    global _EMPTY, _PROPAGATOR, _SERVER, _Status, _ERROR, _set_span_in_context
    global _get_current_span
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _EMPTY = otel_context.Context()
    _PROPAGATOR = TraceContextTextMapPropagator()
    _SERVER, _Status, _ERROR = trace.SpanKind.SERVER, trace.Status, trace.StatusCode.ERROR
    _set_span_in_context, _get_current_span = trace.set_span_in_context, trace.get_current_span


def shutdown() -> None:
    """Export what is buffered and stop (a process's last spans are not lost)."""
    global enabled
    if _provider is not None:
        _provider.shutdown()
    enabled = False


@dataclass(slots=True)
class Trace:
    """One request's server span and the times (ns) its children are made from."""

    span: Any  # the SDK's span; None when the sampler left the request out
    sampled: bool  # recorded and exported (else only its ids travel on)
    trace_id: str  # 32 hex digits
    span_id: int
    token: Any = None
    handler: int = 0  # the handler began: decoding
    predicted: int = 0  # the prediction service began
    model_done: int = 0  # the model answered
    logged: int = 0  # the log took the rows
    returned: int = 0  # the prediction service returned: encoding
    attributes: dict[str, Any] | None = None  # set on sampled spans only

    def set(self, **attributes: Any) -> None:
        """Attributes for the server span (kept for a sampled one only)."""
        if self.sampled:
            if self.attributes is None:
                self.attributes = {}
            self.attributes.update(attributes)

    @property
    def context(self) -> Any:
        """The span's SpanContext (sampled spans: what a link points to)."""
        return self.span.get_span_context() if self.span is not None else None

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id:016x}-{'01' if self.sampled else '00'}"


def current() -> Trace | None:
    """The request being recorded on this thread or task (a sampled one), if any: what the
    request path marks its times and attributes on. An unsampled one needs neither."""
    if not enabled:
        return None
    t = _current.get()
    return t if t is not None and t.sampled else None


def _parent(header: str | None, state: str | None = None) -> Any:
    """The context a ``traceparent`` (and ``tracestate``) continues: an empty one when it
    is absent or malformed, and the span starts a trace of its own."""
    if not header:
        return _EMPTY
    carrier = {"traceparent": header} if state is None else {"traceparent": header,
                                                             "tracestate": state}  # fmt: skip
    return _PROPAGATOR.extract(carrier)


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _remote(header: str | None) -> tuple[int, bool] | None:
    """A valid version-00 ``traceparent``'s trace id and sampled flag, else None (and the
    span starts a trace of its own, as the W3C propagator would)."""
    if header is None:
        return None
    m = _TRACEPARENT.fullmatch(header.strip())
    if m is None or int(m[1], 16) == 0 or int(m[2], 16) == 0:
        return None
    return int(m[1], 16), bool(int(m[3], 16) & 1)


def _sampling(environ: Mapping[str, str]) -> Callable[[tuple[int, bool] | None, int], bool] | None:
    """The decision of the standard samplers named by ``OTEL_TRACES_SAMPLER`` (and _ARG), as
    a plain function of (remote parent, trace id); None for any other sampler (the SDK's
    own then decides for every request). The SDK's sampler is the same one, built from the
    same variables, so a span sampled here is sampled there: the ratio's bound is the SDK's."""
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    try:
        rate = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        rate = 1.0
    bound = TraceIdRatioBased.get_bound_for_rate(min(max(rate, 0.0), 1.0))
    mask = (1 << 64) - 1
    roots: dict[str, Callable[[int], bool]] = {
        "always_on": lambda trace_id: True,
        "always_off": lambda trace_id: False,
        "traceidratio": lambda trace_id: trace_id & mask < bound,
    }
    root = roots.get(name.removeprefix("parentbased_"))
    if root is None:
        return None
    if not name.startswith("parentbased_"):
        return lambda remote, trace_id: root(trace_id)
    return lambda remote, trace_id: root(trace_id) if remote is None else remote[1]


def start(
    name: str, headers: Sequence[tuple[bytes, bytes]], attributes: Mapping[str, Any]
) -> Trace:
    """A server span continuing the caller's ``traceparent``, current until ``finish``.
    Only this module's context variable holds it: OpenTelemetry's own context is not
    attached per request (``traceparent``, ``ids`` and ``span`` read ours first).

    The sampler decides first, on the trace id this span will have; a request it leaves
    out gets its ids and no OpenTelemetry object at all. Its non-recording span, sampling
    result and contexts cost the event loop 15 us a request here (bench/tracing_cost.py),
    a fifth of an iris prediction."""
    header = state = None
    for key, value in headers:
        if key == b"traceparent":
            header = value.decode("latin-1")
        elif key == b"tracestate":
            state = value.decode("latin-1")
    if _decide is not None:
        remote = _remote(header)
        trace_id = remote[0] if remote is not None else _random_id(128)
        if not _decide(remote, trace_id):
            t = Trace(None, False, format(trace_id, "032x"), _random_id(64))
            t.token = _current.set(t)
            return t
        if remote is None:  # the root span the SDK makes gets the id just sampled on
            _next_trace_id.value = trace_id
    parent = _parent(header, state)
    span = _tracer.start_span(name, parent, _SERVER, attributes, start_time=time.time_ns())
    c = span.get_span_context()
    t = Trace(span, c.trace_flags.sampled, format(c.trace_id, "032x"), c.span_id)
    t.token = _current.set(t)
    return t


def _random_id(bits: int) -> int:
    while True:  # an all-zero id is invalid
        value = random.getrandbits(bits)  # nosec B311 - ids, as the SDK draws them
        if value:
            return value


def finish(t: Trace, error: str | None = None) -> None:
    """The children from the marks (for a sampled span), then its end."""
    _current.reset(t.token)
    if not t.sampled:
        return  # nothing is recorded: no attributes, children or end to give it
    end = time.time_ns()
    span = t.span
    if t.attributes:
        span.set_attributes(t.attributes)
    if t.handler:
        parent = _set_span_in_context(span)
        model = {k: v for k, v in (t.attributes or {}).items() if k.startswith("model.")}
        decode_end = t.predicted or t.returned or end
        children: list[tuple[str, int, int, dict[str, Any]]] = [
            ("decode", t.handler, decode_end, {})
        ]
        if t.predicted:
            children.append(("predict", t.predicted, t.model_done or t.returned, model))
            if t.logged:
                children.append(("log.enqueue", t.model_done, t.logged, {}))
            children.append(("encode", t.returned, end, {}))
        for name, begin, stop, attributes in children:
            if begin and stop >= begin:
                child = _tracer.start_span(name, parent, start_time=begin, attributes=attributes)
                child.end(end_time=stop)
    if error is not None:
        span.set_status(_Status(_ERROR, error))
    span.end(end_time=end)


def traceparent() -> str | None:
    """The current request's or span's ``traceparent`` (to hand on), if tracing."""
    if not enabled:
        return None
    t = _current.get()
    if t is not None:
        return t.traceparent()
    c = _get_current_span().get_span_context()
    if not c.is_valid:
        return None
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"


def child_env() -> dict[str, str]:
    """``TRACEPARENT`` for a child process, so its spans continue the current trace."""
    parent = traceparent()
    return {"TRACEPARENT": parent} if parent else {}


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Any] = (),
    parent: str | None = None,
) -> Iterator[Any]:
    """An internal span around a block (None when tracing is off), current inside it. Its
    parent: the ``parent`` traceparent if given (a thread continuing a request's trace),
    else the current request's or span, else at the top of a process ``TRACEPARENT`` from
    the environment (the convention for handing a trace to a child process)."""
    if not enabled:
        yield None
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    if parent is None and _current.get() is not None:
        parent = traceparent()
    if parent is None and not _get_current_span().get_span_context().is_valid:
        parent = os.environ.get("TRACEPARENT")
    context = _parent(parent) if parent else otel_context.get_current()
    with _tracer.start_as_current_span(
        name, context, attributes=dict(attributes or {}), links=[trace.Link(c) for c in links]
    ) as s:
        yield s


def ids() -> tuple[str, str] | None:
    """The current (trace id, span id) in hex, for log lines; None outside a span."""
    if not enabled:
        return None
    t = _current.get()
    if t is not None:
        return t.trace_id, format(t.span_id, "016x")
    c = _get_current_span().get_span_context()
    if not c.is_valid:
        return None
    return format(c.trace_id, "032x"), format(c.span_id, "016x")

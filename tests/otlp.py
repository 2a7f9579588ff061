"""A real OTLP/HTTP trace receiver for tests: decodes each ``ExportTraceServiceRequest``
(protobuf, as the SDK's exporter sends it to ``/v1/traces``) into plain span records."""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    service: str
    start_ns: int
    end_ns: int
    status: int


@dataclass
class Receiver:
    spans: list[Span] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(ExportTraceServiceRequest.FromString(body), self.path)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: ExportTraceServiceRequest, path: str) -> None:
        assert path == "/v1/traces", path
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for s in scope.spans:
                        self.spans.append(
                            Span(
                                s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                s.kind, {a.key: _value(a.value) for a in s.attributes},
                                tuple((x.trace_id.hex(), x.span_id.hex()) for x in s.links),
                                str(resource.get("service.name")), s.start_time_unix_nano,
                                s.end_time_unix_nano, s.status.code,
                            )
                        )  # fmt: skip

    def trace(self, trace_id: str, at_least: int, timeout_s: float = 15.0) -> list[Span]:
        """The spans of ``trace_id`` once there are ``at_least`` of them."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                found = [s for s in self.spans if s.trace_id == trace_id]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def linked_to(self, trace_id: str, span_id: str, timeout_s: float = 15.0) -> list[Span]:
        """The spans (of any trace) that link to the span ``span_id`` of ``trace_id``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                found = [s for s in self.spans if (trace_id, span_id) in s.links]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()


def tree(spans: list[Span]) -> str:
    """The spans as an indented tree (children by start time), for the test's output."""
    by_parent: dict[str, list[Span]] = {}
    for s in spans:
        by_parent.setdefault(s.parent_id, []).append(s)
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        ms = (span.end_ns - span.start_ns) / 1e6
        lines.append(f"{'  ' * depth}{span.name} [{span.service}] {ms:.3f} ms")
        for child in sorted(by_parent.get(span.span_id, []), key=lambda c: c.start_ns):
            walk(child, depth + 1)

    for root in sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns):
        lines.append(f"(parent {root.parent_id or 'none'})")
        walk(root, 1)
    return "\n".join(lines)

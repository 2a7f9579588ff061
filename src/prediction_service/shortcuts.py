"""Every use of a library's private internals, in one place, each measured and switchable.

Two libraries are used below their public API, because the request path was measurably
faster for it. ``PREDICT_SHORTCUTS=false`` (``configure(False)``) turns all of them off: the
service then uses only public APIs, with the same answers and metrics. Each shortcut has a
test that pins the upstream behaviour it relies on (``tests/test_shortcuts.py``), so an
upgrade that changes it fails there, not in production; the protocol tests run once with
the shortcuts off.

1. **prometheus_client histograms** (``observe_one``, ``observe_many``): a histogram child's
   ``_sum``, ``_buckets`` and ``_upper_bounds``, the attributes ``Histogram.observe`` itself
   updates. ``observe_one`` finds the bucket by bisection in C instead of the library's
   Python loop over the bounds: 0.5-1.0 us instead of 0.7-1.3 us a call on this machine, three
   calls a single-row request. ``observe_many`` adds a batch's values per bucket, not per
   value: 10,000 ``observe`` calls cost ~15 ms a batch, and the library has no bulk observe.
2. **uvicorn's httptools protocol** (``http_protocol``): a subclass of
   ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`` (not public API) that writes
   each response once. uvicorn writes the status line and headers at
   ``http.response.start`` and the body at ``http.response.body``: two ``send`` system calls
   a prediction, and two wake-ups of a keep-alive client. ``OneWriteTransport`` holds a write
   back until the next one or the end of the event loop's pass and sends the two together.
   The event loop thread's system time went from 36-38 to 15-18 us a request (wrk c=8,
   single-row iris, alternating runs). The same subclass bounds what a client can hold
   before its request reaches the app, which uvicorn's httptools protocol does not: request
   line and headers at most ``PREDICT_MAX_HEADER_BYTES`` (431, then the connection closes),
   sent within ``PREDICT_HEADER_TIMEOUT_S`` of the connection or the previous response (a
   silent or slowloris connection is closed). With the shortcuts off these two limits are
   uvicorn's (none): run behind a proxy that sets them (docs/security.md).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

import numpy as np
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_enabled = True


def configure(
    enabled: bool, max_header_bytes: int = 64 * 1024, header_timeout_s: float = 10.0
) -> None:
    """Turn every shortcut on (the default) or off (public APIs only), process-wide, and
    set the limits the HTTP protocol holds connections to."""
    global _enabled
    _enabled = enabled
    HttpProtocol.max_header_bytes = max_header_bytes
    HttpProtocol.header_timeout_s = header_timeout_s


def enabled() -> bool:
    return _enabled


# -- 1. prometheus_client histograms ---------------------------------------------------
def observe_one(child: Any, value: float) -> None:
    """``child.observe(value)``; a test compares the two expositions."""
    if not _enabled:
        child.observe(value)
        return
    child._sum.inc(value)
    if value == value:  # NaN fits no bucket, as in observe()
        child._buckets[bisect_left(child._upper_bounds, value)].inc(1)


def observe_many(child: Any, values: np.ndarray) -> None:
    """``child.observe(v)`` for every value, in one pass: a bucket add per bucket, not per
    value. The exposition is the same; a test compares the two."""
    if not _enabled:
        for value in np.asarray(values, dtype=np.float64).tolist():
            child.observe(value)
        return
    bounds = np.asarray(child._upper_bounds)
    # observe() counts a value in the first bucket whose bound is >= it (bounds end at +Inf).
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    child._sum.inc(float(np.sum(values)))
    for bucket, count in zip(child._buckets, counts.tolist()):
        if count:
            bucket.inc(count)


# -- 2. uvicorn's httptools protocol, one write per response ------------------------------
class OneWriteTransport:
    """A transport that holds back one write: the next write or the loop's pass sends it.
    Order is kept, at most one write is ever held, and closing the connection sends it
    first."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport, unchanged
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``OneWriteTransport``, with a bound on the size
    of a request's headers and on the time a client takes to send them."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))  # type: ignore[arg-type]
        self._header_bytes = 0
        self._reading_headers = True  # the request line and headers of the next request
        self._header_timer: asyncio.TimerHandle | None = None
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Headers still incomplete after this read (sent slowly, or endless): what they
        # hold so far is bounded too.
        if self._reading_headers and self._header_bytes > self.max_header_bytes:
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._header_bytes = 0
        if self._header_timer is None:
            self._start_header_timer()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._stop_header_timer()
        if self._header_bytes > self.max_header_bytes:
            self._too_large()  # refused before the app sees the request
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():  # else: refused, no request to give it to
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.transport.is_closing():
            super().on_message_complete()

    def _too_large(self) -> None:
        if not self.transport.is_closing():
            self._refuse(431, f"request headers over {self.max_header_bytes} bytes")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._reading_headers = True  # uvicorn's keep-alive timeout covers the idle wait

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._reading_headers and not self.transport.is_closing():
            self._refuse(408, "request headers not received in time")

    def _refuse(self, status: int, message: str) -> None:
        body = message.encode()
        head = (
            f"HTTP/1.1 {status} {'Request Timeout' if status == 408 else 'Request Header Fields Too Large'}\r\n"
            f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self._stop_header_timer()
        self.transport.write(head.encode() + body)
        self.transport.close()


def http_protocol() -> type[HttpToolsProtocol] | str:
    """What uvicorn's ``http`` option gets: our one-write protocol, or with the shortcuts off
    the public name of uvicorn's own httptools protocol."""
    return HttpProtocol if _enabled else "httptools"

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
3. **scikit-learn's fitted histogram gradient boosting and k-nearest neighbours**
   (``hist_gradient_boosting_trees``, ``nearest_neighbours_data``): their trees
   (``_predictors``, ``_baseline_prediction``) and their training rows (``_fit_X``, ``_y``)
   have no public accessor. Training reads them once, to store the model's portable form,
   so the service predicts (and explains) with the forest kernel or numpy instead of the
   estimator through MLflow's pyfunc: measured here on a single iris row, about 1.8 ms a
   row through pyfunc against tens of microseconds (bench/predictors.py). Off, those models
   are served as before, through the estimator.
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


# -- 3. scikit-learn models without a public view of what they learned --------------------
def hist_gradient_boosting_trees(final: Any) -> tuple[list[Any], np.ndarray] | None:
    """A fitted HistGradientBoosting estimator's trees (node arrays, iteration by
    iteration, one per output) and its baseline score per output; None when the shortcuts
    are off, or when a tree splits on a category (the kernel compares numbers only)."""
    if not _enabled:
        return None
    trees = []
    for iteration in final._predictors:
        for predictor in iteration:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                return None
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(
                {
                    "left": np.where(leaf, -1, nodes["left"].astype(np.int64)),
                    "right": np.where(leaf, -1, nodes["right"].astype(np.int64)),
                    "feature": nodes["feature_idx"].astype(np.int64),
                    "threshold": nodes["num_threshold"].astype(np.float64),
                    "value": nodes["value"].astype(np.float64),
                    "cover": nodes["count"].astype(np.float64),
                }
            )
    return trees, np.asarray(final._baseline_prediction, dtype=np.float64).reshape(-1)


def nearest_neighbours_data(final: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """A fitted k-nearest-neighbours classifier's training rows and their class indices;
    None when the shortcuts are off."""
    if not _enabled:
        return None
    return np.asarray(final._fit_X, dtype=np.float64), np.asarray(final._y, dtype=np.int64)


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


# How long a refused connection's remaining bytes are read and dropped before it is closed.
LINGER_S = 2.0


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``OneWriteTransport``, with a bound on the size
    of a request's headers and on the time a client takes to send them.

    Kept off the per-request path: a request costs two attribute writes (when its headers
    began and that they ended); one sweep per event loop, every second, closes the
    connections whose headers have been arriving for longer than the timeout. A timer per
    request (call_later and cancel) cost 4% of req/s at c=8 here."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    _sweeping: set[asyncio.AbstractEventLoop] = set()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))  # type: ignore[arg-type]
        self._header_bytes = 0
        self._lingering = False
        # When the headers being read began (a new connection must start at once); None
        # between the end of a request's headers and the start of the next request.
        self._headers_since: float | None = self.loop.time()
        if self.loop not in HttpProtocol._sweeping:
            HttpProtocol._sweeping.add(self.loop)
            self.loop.call_later(1.0, _sweep, self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a refused request: read and dropped, never parsed
        super().data_received(data)
        # Headers still incomplete after this read (slow, or endless): what they hold so far
        # is bounded. (Headers complete within one read are one read: at most 256 KB.)
        if self._headers_since is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"request headers over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._headers_since = None
        self._header_bytes = 0
        super().on_headers_complete()

    def too_slow(self, now: float) -> bool:
        since = self._headers_since
        return since is not None and now - since > self.header_timeout_s

    def _refuse(self, status: int, message: str) -> None:
        if self.transport.is_closing():
            return
        self._headers_since = None
        body = message.encode()
        reason = "Request Timeout" if status == 408 else "Request Header Fields Too Large"
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        # A lingering close: closing with the client's bytes unread would send a reset,
        # which can destroy the answer before the client reads it. Half-close instead, drop
        # what still arrives, and close for good after LINGER_S.
        self._lingering = True
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self.transport.close()
            return
        self.loop.call_later(LINGER_S, self.transport.close)


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Close the connections too slow with their headers; again in a second."""
    now = loop.time()
    for protocol in list(connections):
        if isinstance(protocol, HttpProtocol) and protocol.too_slow(now):
            protocol._refuse(408, "request headers not received in time")
    loop.call_later(1.0, _sweep, loop, connections)


def http_protocol() -> type[HttpToolsProtocol] | str:
    """What uvicorn's ``http`` option gets: our one-write protocol, or with the shortcuts off
    the public name of uvicorn's own httptools protocol."""
    return HttpProtocol if _enabled else "httptools"

"""Adaptive batching: concurrent requests for one model version share one call to the model.

A ``Batcher`` stands in for a served version's predict function. Each request's rows join a
queue; whichever waiting thread finds the model free takes the queue's head (whole requests,
up to ``max_batch_size`` rows) and predicts it in one call, then hands every request its own
rows of the answer. So:

- with nothing in the model, a request is sent at once: one request in flight waits for
  nothing (the batcher flushes when the model is idle);
- while a call is in the model, requests gather; when it returns, they go in one call;
- a request never waits longer than ``max_latency_ms`` for its batch to leave: past it, a
  second call starts beside the one in the model (at most ``MAX_CALLS`` at once; the native
  kernels and numpy drop the GIL, so two calls use two cores);
- a batch holds one version's rows only (a batcher per served version), and each request is
  still answered, logged and counted as its own by ``PredictionService.predict``.

Requests reach it from worker threads: an endpoint answers a batched model off the event loop
(``PredictionService.batched``). No thread of its own: nothing to start or stop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from prediction_service.predictors.portable import PredictFn

# Calls in the model at once, at most: the first one, plus one for requests that waited
# max_latency_ms behind it (this machine has 2 cores).
MAX_CALLS = 2


class _Request:
    __slots__ = ("X", "queued", "out", "error", "done")

    def __init__(self, X: np.ndarray) -> None:
        self.X = X
        self.queued = time.perf_counter()
        self.out: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class Batcher:
    """A predict function that batches concurrent calls (the module's docstring says how)."""

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_latency_ms: float,
        batch_rows: Any = None,  # histogram children for (model, version), or None
        queue_wait: Any = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self._batch_rows = batch_rows
        self._queue_wait = queue_wait
        self._ready = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._calls = 0
        self.calls = 0  # model calls made, and the rows they held (for tests and benchmarks)
        self.rows = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        request = _Request(X)
        ready = self._ready
        with ready:
            self._queue.append(request)
            self._queued_rows += len(X)
            while not request.done:
                wait = self._wait()
                if wait == 0.0:
                    self._send()
                else:
                    ready.wait(wait)
        if request.error is not None:
            raise request.error
        assert request.out is not None  # nosec B101 - set with done, unless error is
        return request.out

    def _wait(self) -> float | None:
        """0 when a batch should leave now; else how long to wait (None: until notified)."""
        if not self._queue or self._calls >= MAX_CALLS:
            return None
        if self._calls == 0 or self._queued_rows >= self.max_batch_size:
            return 0.0
        left = self._queue[0].queued + self.max_latency_s - time.perf_counter()
        return 0.0 if left <= 0 else left

    def _send(self) -> None:
        """Take the queue's head and predict it, the lock released meanwhile (held on entry
        and on return)."""
        batch = [self._queue.popleft()]
        rows = len(batch[0].X)
        while self._queue and rows + len(self._queue[0].X) <= self.max_batch_size:
            request = self._queue.popleft()
            batch.append(request)
            rows += len(request.X)
        self._queued_rows -= rows
        self._calls += 1
        self._ready.release()
        try:
            self._predict(batch, rows)
        finally:
            self._ready.acquire()
            self._calls -= 1
            self._ready.notify_all()

    def _predict(self, batch: list[_Request], rows: int) -> None:
        started = time.perf_counter()
        if self._queue_wait is not None:
            for request in batch:
                self._queue_wait.observe(started - request.queued)
        if self._batch_rows is not None:
            self._batch_rows.observe(rows)
        try:
            X = batch[0].X if len(batch) == 1 else np.concatenate([r.X for r in batch])
            out = self.predict(X)
        except BaseException as exc:  # every request of the batch fails with it
            for request in batch:
                request.error = exc
                request.done = True
            return
        self.calls += 1
        self.rows += rows
        start = 0
        for request in batch:
            end = start + len(request.X)
            request.out = out[start:end]
            request.done = True
            start = end


def row_cost(predict: PredictFn, row: np.ndarray, repeat: int = 20) -> float:
    """The median seconds one call with one row takes (the model already warm)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - started)
    return float(np.median(times))

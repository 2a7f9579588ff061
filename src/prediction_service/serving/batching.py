"""Adaptive batching: concurrent requests for one model version share one call to the model.

A served version whose spec asks for it (``serving.batching``) has a ``Batcher``. A request
for it is decoded on the event loop as any other; its rows then join the batcher's queue and
the request awaits its answer, so the loop goes on reading other requests meanwhile. The
model runs in the batcher's own thread (the native kernels and numpy drop the GIL):

- with no call in the model, a request's rows are sent at once: one request in flight waits
  for nothing (the batcher flushes when the model is idle);
- while a call is in the model, requests gather; when it returns, the queue's head (whole
  requests, up to ``max_batch_size`` rows) goes in one call;
- a request waits at most ``max_latency_ms`` for its batch to leave while a call is in the
  model: then a second call starts beside the first (``MAX_CALLS`` at once, at most);
- a batch holds one version's rows only (a batcher per served version), and each request is
  still answered, logged and counted as its own by ``PredictionService``.

A prediction reaches the batcher as a step: ``PredictionService.predicting`` yields a
``ModelCall`` for a batched version, and the transport awaits it (``finish``). A caller in a
thread (a large body, a shadow, a test) drives the same steps with ``run``, which calls the
model directly: it has no batch to join.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import numpy as np

from prediction_service.predictors.portable import PredictFn

# Calls in the model at once, at most: the first one, plus one for requests that waited
# max_latency_ms behind it (this machine has 2 cores).
MAX_CALLS = 2
R = TypeVar("R")


@cache
def _pool() -> ThreadPoolExecutor:
    """The threads every batcher's model calls run in (each batcher holds MAX_CALLS)."""
    return ThreadPoolExecutor(2 * MAX_CALLS, thread_name_prefix="batch")


class _Request:
    __slots__ = ("X", "queued", "future")

    def __init__(self, X: np.ndarray, future: asyncio.Future[np.ndarray]) -> None:
        self.X = X
        self.queued = time.perf_counter()
        self.future = future


class Batcher:
    """Batches one version's concurrent predictions (the module's docstring says how)."""

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_latency_ms: float,
        batch_rows: Any = None,  # histogram children for (model, version), or None
        queue_wait: Any = None,
    ) -> None:
        self.predict = predict  # the model itself: what a caller in a thread calls
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self._batch_rows = batch_rows
        self._queue_wait = queue_wait
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._calls = 0
        self._timer: asyncio.TimerHandle | None = None
        self.calls = 0  # model calls made, and the rows they held (tests, benchmarks)
        self.rows = 0

    async def __call__(self, X: np.ndarray) -> np.ndarray:
        """``X``'s predictions, made with whatever else is queued (on the event loop)."""
        loop = asyncio.get_running_loop()
        self._queue.append(_Request(X, loop.create_future()))
        self._queued_rows += len(X)
        request = self._queue[-1]
        self._schedule(loop)
        return await request.future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what should leave now; else be woken when the queue's head has waited
        max_latency_ms."""
        while self._queue and self._calls < MAX_CALLS:
            left = self._queue[0].queued + self.max_latency_s - time.perf_counter()
            if self._calls == 0 or self._queued_rows >= self.max_batch_size or left <= 0:
                self._send(loop)
                continue
            if self._timer is None:
                self._timer = loop.call_later(left, self._woken, loop)
            return

    def _woken(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._schedule(loop)

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = [self._queue.popleft()]
        rows = len(batch[0].X)
        while self._queue and rows + len(self._queue[0].X) <= self.max_batch_size:
            batch.append(self._queue.popleft())
            rows += len(batch[-1].X)
        self._queued_rows -= rows
        self._calls += 1
        started = time.perf_counter()
        if self._queue_wait is not None:
            for request in batch:
                self._queue_wait.observe(started - request.queued)
        if self._batch_rows is not None:
            self._batch_rows.observe(rows)
        X = batch[0].X if len(batch) == 1 else np.concatenate([r.X for r in batch])
        done: Future[np.ndarray] = _pool().submit(self.predict, X)
        done.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._answer, loop, batch, rows, f)
        )

    def _answer(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Request],
        rows: int,
        done: Future[np.ndarray],
    ) -> None:
        self._calls -= 1
        error = done.exception()
        out, start = None, 0
        if error is None:
            self.calls += 1
            self.rows += rows
            out = done.result()
        for request in batch:
            if not request.future.done():  # not cancelled (a client gone, a shutdown)
                if out is None:
                    request.future.set_exception(error or RuntimeError("no answer"))
                else:
                    request.future.set_result(out[start : start + len(request.X)])
            start += len(request.X)
        self._schedule(loop)


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A prediction's rows for a batched version: what its steps wait for."""

    batcher: Batcher
    X: np.ndarray


# What a prediction, or a handler that makes one, yields until it returns its result.
Steps = Generator[ModelCall, np.ndarray, R]


def run(steps: Steps[R]) -> R:
    """Drive ``steps`` in this thread: each model call goes straight to the model."""
    try:
        call = next(steps)
        while True:
            try:
                out = call.batcher.predict(call.X)
            except Exception as exc:  # noqa: BLE001 - handed to the steps, which count it
                call = steps.throw(exc)
                continue
            call = steps.send(out)
    except StopIteration as stop:
        return stop.value


async def finish(steps: Steps[R], call: ModelCall) -> R:
    """Drive ``steps``, whose first model call is ``call``, on the event loop: each model
    call joins its batch."""
    try:
        while True:
            try:
                out = await call.batcher(call.X)
            except Exception as exc:  # noqa: BLE001 - handed to the steps, which count it
                call = steps.throw(exc)
                continue
            call = steps.send(out)
    except StopIteration as stop:
        return stop.value


def row_cost(predict: PredictFn, row: np.ndarray, repeat: int = 20) -> float:
    """The median seconds one call with one row takes (the model already warm)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - started)
    return float(np.median(times))

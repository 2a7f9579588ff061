"""Adaptive batching (serving/batching.py): concurrent requests share model calls, each gets
its own rows back, an idle model adds no wait, no request waits past max_latency_ms behind a
busy model, and a handler's steps run the same on the loop and in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from prediction_service.serving.batching import MAX_CALLS, Batcher, ModelCall, Steps, finish, run

pytestmark = pytest.mark.unit


class Observed:
    """A histogram child stand-in that keeps what it was given."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


class SlowModel:
    """Each call takes ``seconds`` (in the batcher's thread); records each call's rows and
    the calls in the model at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def __call__(self, X: np.ndarray) -> np.ndarray:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.batches.append(len(X))
        time.sleep(self.seconds)
        with self._lock:
            self.inside -= 1
        return np.column_stack([X.sum(axis=1), X[:, 0] * 2])


def expected(X: np.ndarray) -> np.ndarray:
    return np.column_stack([X.sum(axis=1), X[:, 0] * 2])


def gather(*calls: Awaitable[Any]) -> list[Any]:
    async def main() -> list[Any]:
        return list(await asyncio.gather(*calls))

    return asyncio.run(main())


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows() -> None:
    model = SlowModel(0.01)
    rows, wait = Observed(), Observed()
    batcher = Batcher(model, max_batch_size=8, max_latency_ms=50, batch_rows=rows, queue_wait=wait)
    rng = np.random.default_rng(7)
    requests = [rng.random((int(rng.integers(1, 4)), 3)) for _ in range(64)]
    answers = gather(*(batcher(X) for X in requests))
    for X, out in zip(requests, answers):  # every request its own rows, in its order
        np.testing.assert_array_equal(out, expected(X))
    total = sum(len(X) for X in requests)
    assert sum(model.batches) == total == batcher.rows
    assert batcher.calls == len(model.batches) < len(requests) / 2  # rows did share calls
    assert max(model.batches) <= 8  # no call past max_batch_size (each request fits)
    assert model.most_inside <= MAX_CALLS
    assert rows.values == model.batches and len(wait.values) == len(requests)


def test_one_request_in_flight_is_sent_at_once() -> None:
    model = SlowModel(0.0)
    wait = Observed()
    batcher = Batcher(model, max_batch_size=32, max_latency_ms=200, queue_wait=wait)

    async def one_after_another() -> None:
        for _ in range(20):
            await batcher(np.ones((1, 3)))

    asyncio.run(one_after_another())
    assert model.batches == [1] * 20
    # No wait for a batch to fill: far below the 200 ms the batcher could have waited.
    assert max(wait.values) < 0.02, wait.values


def test_a_request_waits_at_most_max_latency_behind_a_busy_model() -> None:
    release = threading.Event()
    calls: list[int] = []

    def model(X: np.ndarray) -> np.ndarray:
        calls.append(len(X))
        if len(calls) == 1:  # the first call holds the model until released
            release.wait(10)
        return X[:, :1]

    wait = Observed()
    batcher = Batcher(model, max_batch_size=32, max_latency_ms=30, queue_wait=wait)

    async def main() -> tuple[float, np.ndarray, np.ndarray]:
        first = asyncio.ensure_future(batcher(np.zeros((1, 2))))
        while not calls:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        second = await batcher(np.ones((1, 2)))  # goes beside the held call after 30 ms
        waited = time.perf_counter() - started
        assert not first.done()  # the first call is still in the model
        release.set()
        return waited, await first, second

    waited, first, second = asyncio.run(main())
    assert first.tolist() == [[0.0]] and second.tolist() == [[1.0]]
    assert 0.025 <= waited < 1.0 and 0.025 <= wait.values[1] < 1.0


def test_a_large_request_goes_alone_and_an_error_reaches_every_request_of_its_call() -> None:
    model = SlowModel(0.0)
    batcher = Batcher(model, max_batch_size=4, max_latency_ms=5)
    out = asyncio.run(batcher(np.ones((10, 2))))
    assert out.shape == (10, 2) and model.batches == [10]

    def failing(X: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        raise ValueError(f"model broke on {len(X)} rows")

    broken = Batcher(failing, max_batch_size=16, max_latency_ms=50)

    async def call() -> str:
        try:
            await broken(np.ones((1, 2)))
        except ValueError as exc:
            return str(exc)
        return "answered"

    outcomes = gather(*(call() for _ in range(8)))
    assert all(o.startswith("model broke on") for o in outcomes), outcomes
    assert any(o != "model broke on 1 rows" for o in outcomes)  # calls were shared


def steps(batcher: Batcher, X: np.ndarray, log: list[str]) -> Steps[str]:
    """A handler's shape: work, a model call, an error counted on the way out, a reply."""
    log.append("decoded")
    try:
        out = yield ModelCall(batcher, X)
    except ValueError:
        log.append("counted")
        raise
    return f"answered {out.tolist()}"


def test_steps_run_the_same_on_the_loop_and_in_a_thread() -> None:
    batcher = Batcher(lambda X: X * 2, max_batch_size=8, max_latency_ms=5)
    here: list[str] = []
    assert run(steps(batcher, np.ones((1, 1)), here)) == "answered [[2.0]]"

    async def on_the_loop(log: list[str]) -> str:
        s = steps(batcher, np.ones((1, 1)), log)
        return await finish(s, next(s))

    loop: list[str] = []
    assert asyncio.run(on_the_loop(loop)) == "answered [[2.0]]" and here == loop == ["decoded"]
    assert batcher.calls == 1  # the thread called the model directly, not through a batch

    def broken(X: np.ndarray) -> np.ndarray:
        raise ValueError("no")

    failing = Batcher(broken, max_batch_size=8, max_latency_ms=5)
    for drive in (lambda log: run(steps(failing, np.ones((1, 1)), log)),
                  lambda log: asyncio.run(on_the_loop_with(failing, log))):  # fmt: skip
        log: list[str] = []
        with pytest.raises(ValueError, match="no"):
            drive(log)
        assert log == ["decoded", "counted"]


async def on_the_loop_with(batcher: Batcher, log: list[str]) -> str:
    s = steps(batcher, np.ones((1, 1)), log)
    return await finish(s, next(s))

"""Adaptive batching (serving/batching.py): concurrent calls share model calls, each gets its
own rows back, an idle model adds no wait, and no request waits past max_latency_ms."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from prediction_service.serving.batching import MAX_CALLS, Batcher

pytestmark = pytest.mark.unit


class Observed:
    """A histogram child stand-in that keeps what it was given."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


class SlowModel:
    """Each call takes ``seconds``; records the rows of each call and calls in flight."""

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


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows() -> None:
    model = SlowModel(0.01)
    rows, wait = Observed(), Observed()
    batcher = Batcher(model, max_batch_size=8, max_latency_ms=50, batch_rows=rows, queue_wait=wait)
    rng = np.random.default_rng(7)
    requests = [rng.random((int(rng.integers(1, 4)), 3)) for _ in range(64)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(batcher, requests))
    for X, out in zip(requests, answers):  # every request its own rows, in its order
        np.testing.assert_array_equal(out, np.column_stack([X.sum(axis=1), X[:, 0] * 2]))
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
    for _ in range(20):
        batcher(np.ones((1, 3)))
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
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher, np.zeros((1, 2)))
        while not calls:
            time.sleep(0.001)
        started = time.perf_counter()
        second = batcher(np.ones((1, 2)))  # goes beside the held call after 30 ms
        waited = time.perf_counter() - started
        assert not first.done()  # the first call is still in the model
        release.set()
        assert first.result().tolist() == [[0.0]]
    assert second.tolist() == [[1.0]]
    assert 0.025 <= waited < 1.0 and 0.025 <= wait.values[1] < 1.0


def test_a_request_larger_than_the_batch_goes_alone_and_errors_reach_every_request() -> None:
    model = SlowModel(0.0)
    batcher = Batcher(model, max_batch_size=4, max_latency_ms=5)
    out = batcher(np.ones((10, 2)))
    assert out.shape == (10, 2) and model.batches == [10]

    started = threading.Barrier(8)

    def failing(X: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        raise ValueError(f"model broke on {len(X)} rows")

    broken = Batcher(failing, max_batch_size=16, max_latency_ms=50)

    def call(_: int) -> str:
        started.wait()
        try:
            broken(np.ones((1, 2)))
        except ValueError as exc:
            return str(exc)
        return "answered"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    assert all(o.startswith("model broke on") for o in outcomes), outcomes
    assert any(o != "model broke on 1 rows" for o in outcomes)  # calls were shared

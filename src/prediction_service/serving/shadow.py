"""The shadow: a challenger predicting copies of live requests, answered to no one.

The champion answers; the request only hands the rows it predicted to ``ShadowRunner.offer``
(one deque append), and a thread of the runner's own predicts them in batches a moment
later, writing the shadow's rows to the prediction log with ``arm="shadow"`` and the
champion row each pairs with. Feedback on the champion's prediction then labels both, so
the two are compared on the same inputs (``serving/comparison.py``, the paired tests).

Nothing here can delay an answer or change it: the queue is bounded in rows, and when the
shadow falls behind, new rows are dropped and counted (``shadow_dropped_total``) rather than
queued without bound.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from prediction_service.metrics import Metrics
from prediction_service.serving.model_store import ServedModel
from prediction_service.storage.prediction_log import LogBatch, PredictionLog

log = logging.getLogger(__name__)

# Rows waiting for a shadow at most (bounded memory), and how often the thread takes them.
DEFAULT_MAX_ROWS = 50_000
DEFAULT_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class _Copy:
    """The rows of one answered request, for the shadow."""

    model: ServedModel  # the shadow that predicts them
    X: np.ndarray
    pair_ids: list[str]  # the champion's prediction ids, row by row
    protocol: str
    created_at: float


class ShadowRunner:
    def __init__(
        self,
        log: PredictionLog,
        metrics: Metrics,
        ids: Any,
        max_rows: int = DEFAULT_MAX_ROWS,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.log = log
        self.metrics = metrics
        self.ids = ids  # the prediction service's id source (serving.predictions.Ids)
        self.max_rows = max_rows
        self.interval_s = interval_s
        self._pending: collections.deque[_Copy] = collections.deque()
        self._rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request path: one append, or a counted drop ------------------------------------
    def offer(
        self,
        shadow: ServedModel,
        X: np.ndarray,
        pair_ids: list[str],
        protocol: str,
    ) -> None:
        n = len(pair_ids)
        with self._lock:
            if self._rows + n > self.max_rows:
                dropped = True
            else:
                dropped = False
                self._rows += n
                self._pending.append(_Copy(shadow, X, pair_ids, protocol, time.time()))
        if dropped:
            self.metrics.shadow_dropped.labels(shadow.name).inc(n)

    @property
    def queued_rows(self) -> int:
        return self._rows

    # -- the shadow's thread ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Predict what is queued, then stop (its rows go to the log before it closes)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(30)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        with self._lock:
            copies = list(self._pending)
            self._pending.clear()
            self._rows = 0
        groups: dict[int, list[_Copy]] = {}
        for copy in copies:
            groups.setdefault(id(copy.model), []).append(copy)
        for group in groups.values():
            try:
                self._predict(group)
            except Exception:  # noqa: BLE001 - a shadow failing costs its rows, never answers
                log.exception("shadow %s failed on %d requests", group[0].model.name, len(group))

    def _predict(self, group: list[_Copy]) -> None:
        """One call to the shadow for the group's rows, and one log batch for them all. A
        shadow's row keeps what its pair does not already hold: its own prediction, the
        pair's id, the protocol and time; its features are its pair's (stored once, not
        twice: the writer's work per shadow row is about half an answer's)."""
        cpu = time.thread_time()
        model = group[0].model
        X = group[0].X if len(group) == 1 else np.vstack([c.X for c in group])
        started = time.perf_counter()
        out = model.predict(X)
        latency_ms = (time.perf_counter() - started) * 1000.0 / len(X)
        classes = model.classes
        pair_ids = group[0].pair_ids if len(group) == 1 else [i for c in group for i in c.pair_ids]
        self.log.record(
            LogBatch(
                model=model.name,
                version=model.version,
                created_at=group[-1].created_at,
                request_id=None,  # the pair's row has it
                latency_ms=latency_ms,
                feature_names=(),  # likewise its features
                ids=self.ids.take(len(X)),
                features=X,
                predictions=out.tolist() if classes is None else out.argmax(axis=1).tolist(),
                probabilities=None if classes is None else out,
                classes=classes,
                protocol=group[0].protocol,
                arm="shadow",
                pair_ids=pair_ids,
            )
        )
        self.metrics.shadow_predictions.labels(model.name, model.version).inc(len(X))
        self.metrics.shadow_cpu.labels(model.name).inc(time.thread_time() - cpu)

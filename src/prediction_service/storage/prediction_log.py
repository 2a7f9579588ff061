"""The prediction log: a bounded queue drained in batches by one writer thread.

Requests only enqueue (no I/O on the request path). If the database fails, rows of that
batch are counted as lost and predictions keep succeeding; a full queue drops new rows and
counts them, so memory stays bounded. ``close`` drains the queue before returning.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select, update

from prediction_service.metrics import Metrics
from prediction_service.storage.db import PredictionRecord, utc_iso

log = logging.getLogger(__name__)

_STOP = object()
_INSERT_COLUMNS = (
    "id", "created_at", "model", "version", "features", "prediction",
    "probabilities", "latency_ms", "request_id", "status",
)  # fmt: skip


class PredictionLog:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        max_queue: int = 100_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._last_error_log = 0.0
        # The writer shares the GIL with requests, so its cost matters: rows go to the
        # driver with values encoded by orjson, 19.6 us a row against 28.2 us through
        # SQLAlchemy's insert() with JSON bind processing (bench.run.prediction_log_cost,
        # same machine, same run).
        self._sqlite = engine.dialect.name == "sqlite"
        mark = "?" if self._sqlite else "%s"
        self._insert_sql = (
            f"INSERT INTO predictions ({', '.join(_INSERT_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_INSERT_COLUMNS))})"
        )

    # -- request path ------------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        self.record_many([row])

    def record_many(self, rows: list[dict[str, Any]]) -> None:
        for i, row in enumerate(rows):
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self.metrics.log_dropped.inc(len(rows) - i)
                return

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every row queued so far has been handled (written or counted lost)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        created = row["created_at"]
        if self._sqlite:  # the text form SQLAlchemy's SQLite DateTime reads back
            created = created.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        probabilities = row.get("probabilities")
        return (
            row["id"],
            created,
            row["model"],
            row["version"],
            orjson.dumps(row["features"]).decode(),
            orjson.dumps(row["prediction"]).decode(),
            None if probabilities is None else orjson.dumps(probabilities).decode(),
            row["latency_ms"],
            row.get("request_id"),
            row["status"],
        )

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- writer --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("prediction log writer did not finish within %.0fs", timeout_s)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                continue
            batch: list[dict[str, Any]] = []
            item = first
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for _ in range(len(batch) + (1 if stopping else 0)):
                self._queue.task_done()
            if stopping:  # drain what arrived behind the stop marker too
                rest = []
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        rest.append(item)
                for i in range(0, len(rest), self.batch_size):
                    self._write(rest[i : i + self.batch_size])
                for _ in rest:
                    self._queue.task_done()
            self.metrics.log_queue_depth.set(self._queue.qsize())

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(self._insert_sql, [self._params(r) for r in batch])
            self.metrics.log_written.inc(len(batch))
        except Exception as exc:  # noqa: BLE001 - a DB failure must never reach requests
            self.metrics.log_write_failures.inc(len(batch))
            now = time.monotonic()
            if now - self._last_error_log > 10:
                self._last_error_log = now
                log.error("prediction log: %d rows not written: %s", len(batch), exc)

    # -- ground truth and recent traffic -----------------------------------------------
    def find(self, prediction_id: str) -> dict[str, Any] | None:
        stmt = select(PredictionRecord).where(PredictionRecord.id == prediction_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return dict(row._mapping) if row else None

    def set_actual(self, prediction_id: str, actual: Any) -> bool:
        """Store the ground truth once; False when the prediction already has one."""
        stmt = (
            update(PredictionRecord)
            .where(PredictionRecord.id == prediction_id, PredictionRecord.actual.is_(None))
            .values(actual=actual, actual_at=datetime.now(UTC))
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def recent_feedback(self, model: str, version: str, limit: int) -> list[tuple[Any, Any]]:
        """(prediction, actual) of the latest predictions that got ground truth."""
        stmt = (
            select(PredictionRecord.prediction, PredictionRecord.actual)
            .where(
                PredictionRecord.model == model,
                PredictionRecord.version == version,
                PredictionRecord.actual_at.is_not(None),
            )
            .order_by(PredictionRecord.actual_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(p, a) for p, a in conn.execute(stmt)]

    def recent(self, model: str, limit: int) -> list[tuple[dict[str, float], Any]]:
        """(features, prediction) of the model's latest predictions."""
        stmt = (
            select(PredictionRecord.features, PredictionRecord.prediction)
            .where(PredictionRecord.model == model)
            .order_by(PredictionRecord.seq.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(f, p) for f, p in conn.execute(stmt)]

    # -- reads ---------------------------------------------------------------------------
    def history(
        self, model: str | None, limit: int, before: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; ``before`` is the cursor (a row's ``seq``) from the previous page."""
        stmt = select(PredictionRecord).order_by(PredictionRecord.seq.desc()).limit(limit + 1)
        if model is not None:
            stmt = stmt.where(PredictionRecord.model == model)
        if before is not None:
            stmt = stmt.where(PredictionRecord.seq < before)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        next_cursor = rows[limit - 1]["seq"] if len(rows) > limit else None
        return [_public(r) for r in rows[:limit]], next_cursor


PUBLIC_COLUMNS = (
    "id", "created_at", "model", "version", "features", "prediction",
    "probabilities", "latency_ms", "request_id", "status", "actual",
)  # fmt: skip


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: utc_iso(row[k]) for k in PUBLIC_COLUMNS}

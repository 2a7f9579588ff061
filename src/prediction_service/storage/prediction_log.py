"""The prediction log: a bounded queue drained in batches by one writer thread.

Requests only enqueue (no I/O on the request path). If the database fails, rows of that
batch are counted as lost and predictions keep succeeding (or, with ``required``, are
refused while it fails); the log says it is failing (``status``, the health route, a gauge)
until a write succeeds again. A full queue pushes back: the request waits for the writer to
make room, so traffic faster than the database can take is slowed rather than lost; only
when the writer stays stuck for ``full_wait_s`` (a hung database) are new rows dropped and
counted, so memory stays bounded and requests still get answers. ``close`` drains the queue
before returning. A SQLite file removed or replaced under the service is noticed before the
next write, and a new one is made.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DataError, IntegrityError

from prediction_service import tracing
from prediction_service.domain import LoggedPrediction, LogStatus
from prediction_service.metrics import Metrics
from prediction_service.storage.db import (
    ArchivedIdRange,
    PredictionRecord,
    migrate,
    sqlite_file,
    utc_iso,
)

log = logging.getLogger(__name__)

# Tuning defaults (Settings reads them from here: PREDICT_LOG_*).
DEFAULT_QUEUE_ROWS = 100_000
DEFAULT_BATCH_ROWS = 2000
DEFAULT_FLUSH_INTERVAL_S = 0.2
DEFAULT_FULL_WAIT_S = 5.0
DEFAULT_ARCHIVE_BATCH_ROWS = 50_000  # retention's rows per transaction (storage/archive.py)
# Waits between attempts while the database is failing (locked, read-only, restarting):
# about 3.5 s in all, longer than a PostgreSQL restart here takes.
OUTAGE_BACKOFF_S = (0.5, 1.0, 2.0)
# 256 rows x 14 columns: under SQLite's bound-parameter limit (32,766) and PostgreSQL's.
_MAX_ROWS_PER_INSERT = 256
# The placeholder of each DB-API paramstyle whose parameters are a sequence.
_POSITIONAL_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# Links a writer's insert span keeps (a batch may carry thousands of requests).
MAX_LINKS = 128
_STOP = object()
_FLUSH = object()
_INSERT_COLUMNS = (
    "id", "created_at", "model", "version", "features", "prediction",
    "probabilities", "latency_ms", "request_id", "status", "protocol", "arm", "pair_id",
    "trace_id",
)  # fmt: skip


def _fraction_appends(bind: Any) -> bool:
    """Whether a time's text is the second's text, then ``.`` and six digits of microseconds."""
    moment = datetime(2001, 2, 3, 4, 5, 6, 789012, UTC)
    whole, rest = str(bind(moment.replace(microsecond=0))), str(bind(moment))
    return rest == f"{whole[:-7]}.789012" and whole.endswith(".000000")


class LogBatch(NamedTuple):
    """The predictions of one request: one queue item, however many rows.

    Columns stay the arrays the service computed (numpy arrays are not tracked by the
    garbage collector, so a backlog does not slow collections); the writer turns them into
    rows, so a 10,000-row batch costs the request one enqueue, not 10,000.
    """

    model: str
    version: str
    created_at: float  # Unix time, seconds
    request_id: str | None
    latency_ms: float  # per row
    feature_names: Sequence[str]
    ids: Sequence[str]
    features: np.ndarray  # (rows, features), in feature_names order
    predictions: Sequence[Any]  # the values, or for classifiers the index into classes
    probabilities: np.ndarray | None = None  # (rows, classes), classifiers only
    classes: Sequence[str] | None = None
    status: str = "ok"
    protocol: str = "native"
    arm: str | None = None  # "shadow" for a shadow's rows
    pair_ids: Sequence[str] | None = None  # per row: the champion row it pairs with
    trace_id: str | None = None  # the request's trace (32 hex digits), when tracing
    span: Any = None  # the request's sampled span context: the writer's span links to it

    @property
    def size(self) -> int:
        return len(self.ids)


class PredictionLog:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        max_queue: int = DEFAULT_QUEUE_ROWS,
        batch_size: int = DEFAULT_BATCH_ROWS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        full_wait_s: float = DEFAULT_FULL_WAIT_S,
        required: bool = False,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.required = required  # predictions are refused while the log fails
        self.failing_since: float | None = None  # Unix time of the first failure in a row
        self.last_error: str | None = None
        # The SQLite file (None for PostgreSQL or memory), and its identity when last seen.
        self._file = sqlite_file(engine)
        self._file_id: tuple[int, int] | None = None
        self.max_queue = max_queue  # rows
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        # Requests append here without waking the writer: a queue.get() per item woke the
        # writer thread once per request, and that context switch and GIL hand-over cost
        # more than the request (26% of the server's CPU was in the kernel's task switching
        # under wrk at concurrency 8). The writer wakes every flush interval, or when
        # ``batch_size`` rows wait (``_wake``), and takes everything.
        self._pending: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._queued_rows = 0  # rows enqueued and not yet handled by the writer
        self._unfinished = 0  # queue items likewise
        self.full_wait_s = full_wait_s
        self._count_lock = threading.Lock()
        self._room = threading.Condition(self._count_lock)  # the writer made room
        self._thread: threading.Thread | None = None
        self._closing = False  # no outage retries while draining at shutdown
        self._last_error_log = 0.0
        self._second, self._second_text = -1, ""
        # The writer shares the GIL with requests, so its cost matters: rows go to the
        # driver as tuples with values encoded by orjson (bench.run.prediction_log_cost).
        dialect = engine.dialect
        mark = _POSITIONAL_MARKS.get(dialect.paramstyle)
        if mark is None:
            raise ValueError(f"the {dialect.name} driver's paramstyle {dialect.paramstyle!r} "
                             "is not supported by the prediction log")  # fmt: skip
        self._columns = ", ".join(_INSERT_COLUMNS)
        self._row_marks = "(" + ", ".join([mark] * len(_INSERT_COLUMNS)) + ")"
        # The driver's form of a timestamp: the column type's own bind processor (SQLite
        # stores text, PostgreSQL's driver takes a datetime).
        created_at = PredictionRecord.__table__.c.created_at.type
        self._bind_time = created_at.dialect_impl(dialect).bind_processor(dialect)
        self._per_second = self._bind_time is not None and _fraction_appends(self._bind_time)
        self._statements: dict[int, str] = {}

    # -- request path ------------------------------------------------------------------
    def record(self, batch: LogBatch) -> None:
        """Queue ``batch`` for writing. When the queue is full, wait up to ``full_wait_s`` for
        the writer to make room (this holds the caller, on purpose: backpressure), then drop
        the rows and count them. A batch larger than the whole queue waits for it to empty."""
        n = batch.size
        with self._count_lock:
            if self._queued_rows + n > self.max_queue:
                started = time.monotonic()
                room = self._room.wait_for(
                    lambda: self._queued_rows == 0 or self._queued_rows + n <= self.max_queue,
                    self.full_wait_s,
                )
                self.metrics.log_backpressure.inc(time.monotonic() - started)
                if not room:
                    self.metrics.log_dropped.inc(n)
                    return
            self._queued_rows += n
            self._unfinished += 1
            self._pending.append(batch)
            full = self._queued_rows >= self.batch_size
        if full and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every row queued so far has been handled (written or counted lost)."""
        if self._unfinished:
            self._pending.append(_FLUSH)  # the writer writes what it holds now, not later
            self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self._unfinished and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._unfinished

    @property
    def queue_depth(self) -> int:
        """Rows waiting to be written."""
        return self._queued_rows

    def _rows(self, batch: LogBatch) -> list[tuple[Any, ...]]:
        """The insert parameters of every row of ``batch``.

        This runs on the writer thread but holds the GIL, so it is kept lean: most requests
        are single rows, and their cost here is paid once per prediction.
        """
        dumps, names, classes = orjson.dumps, batch.feature_names, batch.classes
        created = self._timestamp(batch.created_at)
        features = batch.features.tolist()
        values = batch.predictions
        probabilities = None if classes is None else batch.probabilities
        if len(features) == 1:  # most requests: one tuple, no intermediate lists
            if classes is None or probabilities is None:
                value, probs = values[0], None
            else:
                value = classes[values[0]]
                probs = dumps(dict(zip(classes, probabilities[0].tolist()))).decode()
            return [
                (
                    batch.ids[0], created, batch.model, batch.version,
                    dumps(dict(zip(names, features[0]))).decode(), dumps(value).decode(), probs,
                    batch.latency_ms, batch.request_id, batch.status, batch.protocol, batch.arm,
                    batch.pair_ids[0] if batch.pair_ids else None, batch.trace_id,
                )
            ]  # fmt: skip
        head = (created, batch.model, batch.version)
        tail = (batch.latency_ms, batch.request_id, batch.status, batch.protocol, batch.arm)
        pairs: Sequence[str | None] = batch.pair_ids or [None] * len(features)
        feature_text = [dumps(dict(zip(names, row))).decode() for row in features]
        if classes is None or probabilities is None:
            prediction_text = [dumps(v).decode() for v in values]
            probability_text: list[str | None] = [None] * len(features)
        else:
            prediction_text = [dumps(classes[b]).decode() for b in values]
            probability_text = [
                dumps(dict(zip(classes, p))).decode() for p in probabilities.tolist()
            ]
        return [
            (i, *head, f, p, q, *tail, pair, batch.trace_id)
            for i, f, p, q, pair in zip(
                batch.ids, feature_text, prediction_text, probability_text, pairs
            )
        ]

    def _timestamp(self, when: float) -> Any:
        """``when`` as the driver takes it. Where the type's processor writes text that ends
        in the microseconds (SQLite), the text is built from a per-second prefix:
        datetime.isoformat and the processor cost 4 us a row here, the prefix 0.3."""
        if self._bind_time is None:
            return datetime.fromtimestamp(when, UTC)
        if not self._per_second:
            return self._bind_time(datetime.fromtimestamp(when, UTC))
        second = int(when)
        if second != self._second:
            self._second = second
            self._second_text = self._bind_time(datetime.fromtimestamp(second, UTC))[:-7]
        return f"{self._second_text}.{int((when - second) * 1e6):06d}"

    # -- writer --------------------------------------------------------------------------
    def start(self) -> None:
        self._file_id = self._identity()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        if self._thread is None:
            return
        self._closing = True
        self._pending.append(_STOP)
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("prediction log writer did not finish within %.0fs", timeout_s)
        self._thread = None

    def _run(self) -> None:
        """Write what waits every ``flush_interval_s``, or as soon as ``batch_size`` rows wait
        (or a flush or stop asks), in transactions of about ``batch_size`` rows.

        Gathering matters: one transaction per single-row request costs more than the rows
        themselves, on a core that serves.
        """
        stopping = False
        while not stopping:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self.failing_since is not None and not self._pending:
                self._probe()  # is it writable again? (nothing may come while refused)
            batches: list[LogBatch] = []
            rows = 0
            while self._pending:
                item = self._pending.popleft()
                if item is _STOP:
                    stopping = True  # and take everything queued before it
                elif item is not _FLUSH:
                    batches.append(item)
                    rows += item.size
                    if rows >= self.batch_size:
                        self._handled(batches, rows)
                        batches, rows = [], 0
            self._handled(batches, rows)

    def _handled(self, batches: list[LogBatch], rows: int) -> None:
        if batches:
            self._write(batches, rows)
        with self._count_lock:
            self._queued_rows -= rows
            self._unfinished -= len(batches)
            self._room.notify_all()
        self.metrics.log_queue_depth.set(self._queued_rows)

    def _write(self, batches: list[LogBatch], rows: int) -> None:
        """One transaction for the gathered rows. The database failing (locked, read-only,
        restarting) is retried with backoff, then the rows are counted lost; a row the
        database refuses (too long, a duplicate id) is found by writing row by row, so only
        that row is lost. A failure never reaches the requests."""
        try:
            params = [r for b in batches for r in self._rows(b)]
        except Exception as exc:  # noqa: BLE001 - a record we cannot encode is lost, counted
            self._lost(rows, "encode", exc)
            return
        self._follow_file()
        if tracing.enabled:  # one span for the insert, linked to the requests it carries
            links = [b.span for b in batches if b.span is not None][:MAX_LINKS]
            with tracing.span("prediction_log.insert", {"db.rows": rows}, links):
                self._insert_retrying(params, rows)
            return
        self._insert_retrying(params, rows)

    def _insert_retrying(self, params: list[tuple[Any, ...]], rows: int) -> None:
        for delay in (*OUTAGE_BACKOFF_S, None):
            try:
                self._insert(params)
                self.metrics.log_written.inc(rows)
                self._writable()
                return
            except (DataError, IntegrityError):  # a value of some row: find it
                self._write_one_by_one(params)
                return
            except Exception as exc:  # noqa: BLE001 - the database: locked, read-only, down
                if delay is None or self._closing:
                    self._lost(rows, "database", exc)
                    return
                time.sleep(delay)

    def _write_one_by_one(self, params: list[tuple[Any, ...]]) -> None:
        written = 0
        for row in params:
            try:
                self._insert([row])
                written += 1
            except Exception as exc:  # noqa: BLE001 - this row only
                self._lost(1, "row", exc, row[0])
        self.metrics.log_written.inc(written)

    def _insert(self, params: list[tuple[Any, ...]]) -> None:
        """One transaction; rows go in multi-row INSERTs of 1, 2, 4, ... 256 rows (a few
        statement texts, so the driver's statement cache holds them all). executemany ran
        one statement per row, and sqlite3 hands the GIL over around each: a convoy with the
        event loop. Writer time per single-row request's row, bench.run.prediction_log_cost
        on this machine: 12.3 us with executemany, 7.2 us with these."""
        with self.engine.begin() as conn:
            done = 0
            while done < len(params):
                n = min(_MAX_ROWS_PER_INSERT, 1 << ((len(params) - done).bit_length() - 1))
                values = tuple(chain.from_iterable(params[done : done + n]))
                conn.exec_driver_sql(self._statement(n), values)
                done += n

    def _statement(self, rows: int) -> str:
        sql = self._statements.get(rows)
        if sql is None:
            marks = ", ".join([self._row_marks] * rows)
            # Constant column names; every value is a bound parameter.
            sql = f"INSERT INTO predictions ({self._columns}) VALUES {marks}"  # nosec B608
            self._statements[rows] = sql
        return sql

    # -- failing, and the file under it ------------------------------------------------
    def status(self) -> LogStatus:
        since = self.failing_since
        return LogStatus(
            writable=since is None,
            failing_for_s=None if since is None else round(time.time() - since, 1),
            last_error=self.last_error,
            queued_rows=self._queued_rows,
            required=self.required,
        )

    def _failing(self, exc: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
            self.metrics.log_failing.set(1)
        self.last_error = _first_line(exc)

    def _writable(self) -> None:
        if self.failing_since is not None:
            log.warning("prediction log: writable again")
            self.failing_since = None
            self.metrics.log_failing.set(0)

    def _probe(self) -> None:
        """A write that changes nothing: it fails where a row would."""
        self._follow_file()
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM predictions WHERE 1 = 0")
        except Exception as exc:  # noqa: BLE001 - still failing
            self._failing(exc)
            return
        self._writable()

    def _identity(self) -> tuple[int, int] | None:
        """The SQLite file's (device, inode), or None when there is none."""
        if self._file is None:
            return None
        try:
            stat = os.stat(self._file)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def _follow_file(self) -> None:
        """Rows go to the file that is there now. A SQLite file removed (``rm -rf logs/``)
        or replaced under the service keeps its open connections writing to the old inode,
        which nobody can read again: every row after it would be lost without a word.
        Before writing, the file is checked (one stat): if it changed, the pool is dropped,
        and a new file with the schema is made where the old one was."""
        if self._file is None:
            return
        seen = self._identity()
        if seen is not None and seen == self._file_id:
            return
        try:
            self.engine.dispose()
            Path(self._file).parent.mkdir(parents=True, exist_ok=True)
            migrate(self.engine)
        except Exception as exc:  # noqa: BLE001 - the insert fails next, and is counted
            self._failing(exc)
            return
        if self._file_id is not None:
            self.metrics.log_file_recreated.inc()
            log.error(
                "prediction log: %s was removed or replaced; writing to a new one", self._file
            )
        self._file_id = self._identity()

    def _lost(self, rows: int, reason: str, exc: Exception, prediction_id: str = "") -> None:
        self.metrics.log_write_failures.labels(reason).inc(rows)
        if reason == "database":
            self._failing(exc)
        now = time.monotonic()
        if reason == "row" or now - self._last_error_log > 10:  # an outage logs once in 10 s
            self._last_error_log = now
            which = f"row {prediction_id}" if prediction_id else f"{rows} rows"
            log.error("prediction log: %s not written (%s): %s", which, reason, _first_line(exc))

    # -- ground truth and recent traffic -----------------------------------------------
    def find(self, prediction_id: str) -> LoggedPrediction | None:
        stmt = select(PredictionRecord).where(PredictionRecord.id == prediction_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _public(row._mapping) if row else None

    def archived(self, prediction_id: str) -> bool:
        """Whether a prediction not in the live table was moved to the archive (retention
        records each serving process's archived id counters by id prefix)."""
        parts = id_parts(prediction_id)
        if parts is None:
            return False
        prefix, n = parts
        stmt = select(ArchivedIdRange.model).where(
            ArchivedIdRange.prefix == prefix, ArchivedIdRange.low <= n, ArchivedIdRange.high >= n
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def set_actual(self, prediction_id: str, actual: Any) -> bool:
        """Store the ground truth once, on the prediction and on a shadow's prediction of
        the same input (its pair); False when the prediction already has one."""
        stmt = (
            update(PredictionRecord)
            .where(PredictionRecord.id == prediction_id, PredictionRecord.actual.is_(None))
            .values(actual=actual, actual_at=datetime.now(UTC))
        )
        paired = (
            update(PredictionRecord)
            .where(PredictionRecord.pair_id == prediction_id, PredictionRecord.actual.is_(None))
            .values(actual=actual, actual_at=datetime.now(UTC))
        )
        with self.engine.begin() as conn:
            if not conn.execute(stmt).rowcount:
                return False
            conn.execute(paired)
            return True

    def last_seq(self) -> int:
        """The newest row's ``seq`` (0 for an empty log): rows after it are newer."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(PredictionRecord.seq))).scalar() or 0)

    def since(
        self, model: str, version: str, after_seq: int, limit: int = 50_000
    ) -> list[tuple[Any, Any, float]]:
        """(prediction, actual or None, latency_ms) of the version's rows after ``after_seq``,
        newest first (the ``(model, seq)`` index finds them without a scan)."""
        stmt = (
            select(
                PredictionRecord.prediction, PredictionRecord.actual, PredictionRecord.latency_ms
            )
            .where(
                PredictionRecord.model == model,
                PredictionRecord.seq > after_seq,
                PredictionRecord.version == version,
                PredictionRecord.arm.is_(None),  # answers, not a shadow's copies
            )
            .order_by(PredictionRecord.seq.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(p, a, float(ms)) for p, a, ms in conn.execute(stmt)]

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
        """(features, prediction) of the model's latest answers (not its shadow's copies)."""
        stmt = (
            select(PredictionRecord.features, PredictionRecord.prediction)
            .where(PredictionRecord.model == model, PredictionRecord.arm.is_(None))
            .order_by(PredictionRecord.seq.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(f, p) for f, p in conn.execute(stmt)]

    def pairs(
        self, model: str, shadow_version: str, after_seq: int, since: float | None = None
    ) -> list[tuple[Any, Any, Any]]:
        """(champion's prediction, shadow's prediction, actual or None) of each input the
        shadow ``shadow_version`` predicted after ``after_seq`` (and at or after the Unix
        time ``since``), newest first."""
        shadow = PredictionRecord.__table__.alias("shadow")
        champion = PredictionRecord.__table__.alias("champion")
        stmt = (
            select(champion.c.prediction, shadow.c.prediction, shadow.c.actual)
            .select_from(shadow.join(champion, champion.c.id == shadow.c.pair_id))
            .where(
                shadow.c.model == model,
                shadow.c.arm == "shadow",
                shadow.c.version == shadow_version,
                shadow.c.seq > after_seq,
            )
            .order_by(shadow.c.seq.desc())
            .limit(200_000)
        )
        if since is not None:
            stmt = stmt.where(shadow.c.created_at >= datetime.fromtimestamp(since, UTC))
        with self.engine.connect() as conn:
            return [(c, s, a) for c, s, a in conn.execute(stmt)]

    # -- reads ---------------------------------------------------------------------------
    def history(
        self, model: str | None, limit: int, before: int | None, trace_id: str | None = None
    ) -> tuple[list[LoggedPrediction], int | None]:
        """Newest first; ``before`` is the cursor (a row's ``seq``) from the previous page."""
        stmt = select(PredictionRecord).order_by(PredictionRecord.seq.desc()).limit(limit + 1)
        if model is not None:
            stmt = stmt.where(PredictionRecord.model == model)
        if trace_id is not None:
            stmt = stmt.where(PredictionRecord.trace_id == trace_id)
        if before is not None:
            stmt = stmt.where(PredictionRecord.seq < before)
        with self.engine.connect() as conn:
            rows = [r._mapping for r in conn.execute(stmt)]
        next_cursor = rows[limit - 1]["seq"] if len(rows) > limit else None
        return [_public(r) for r in rows[:limit]], next_cursor


def id_parts(prediction_id: str) -> tuple[str, int] | None:
    """A service-made id's process prefix and counter (``Ids``: 16 + 16 hex digits)."""
    if len(prediction_id) != 32:
        return None
    try:
        counter = int(prediction_id[16:], 16)
    except ValueError:
        return None
    # A database integer is signed 64-bit; the service's counters never come near it.
    return (prediction_id[:16], counter) if counter < 2**63 else None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


PUBLIC_COLUMNS = tuple(LoggedPrediction.model_fields)


def _public(row: Any) -> LoggedPrediction:
    return LoggedPrediction.model_validate({k: utc_iso(row[k]) for k in PUBLIC_COLUMNS})

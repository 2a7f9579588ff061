"""The prediction log's lifecycle: rows past their retention leave the live table for
Parquet files, partitioned by model and day, and are deleted only once their file is
durably written and read back equal.

``<archive>/model=<model>/date=<YYYY-MM-DD>/part-<first seq>-<last seq>.parquet`` holds
every column of the rows (JSON columns as their JSON text). A file counts once its row in
``log_archive_files`` exists; that row, the rows' deletion and the archived id ranges (what
tells a late feedback that its prediction was archived) are one transaction. A run killed
after writing a file and before that transaction leaves an orphan, which the next run over
the same day removes before it writes, so nothing is lost and nothing is archived twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from sqlalchemy import Engine, and_, delete, func, insert, select, text, update

from prediction_service.metrics import Metrics
from prediction_service.storage import partitions
from prediction_service.storage.db import (
    ArchivedIdRange,
    ArchiveFileRecord,
    PredictionRecord,
    as_utc,
)
from prediction_service.storage.files import write_durably
from prediction_service.storage.prediction_log import DEFAULT_ARCHIVE_BATCH_ROWS, id_parts

log = logging.getLogger(__name__)

_JSON = ("features", "prediction", "probabilities", "actual")
_TIME = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("seq", pa.int64()), ("id", pa.string()), ("created_at", _TIME),
        ("version", pa.string()), ("features", pa.string()), ("prediction", pa.string()),
        ("probabilities", pa.string()), ("latency_ms", pa.float64()),
        ("request_id", pa.string()), ("status", pa.string()), ("protocol", pa.string()),
        ("actual", pa.string()), ("actual_at", _TIME), ("arm", pa.string()),
        ("pair_id", pa.string()), ("trace_id", pa.string()),
    ]
)  # fmt: skip
COLUMNS = tuple(SCHEMA.names)
# A day partition's rows of one model, a batch at a time (the partition's name goes in {}).
_DAY_ROWS = (
    "SELECT seq, id, created_at, version, features, prediction, probabilities, latency_ms, "
    "request_id, status, protocol, actual, actual_at, arm, pair_id, trace_id FROM {} "
    "WHERE model = :m AND seq > :after ORDER BY seq LIMIT :n"
)


class Changed(Exception):
    """Rows changed (a late label) between being read and deleted: archive them again."""


class LeaseLost(Exception):
    """Another worker took over retention (this one stalled past its lease): stop."""


@dataclass(frozen=True)
class Archive:
    """Where archives go: a local folder, or any URL pyarrow's filesystems take (s3://,
    gs://, ...)."""

    location: str
    fs: pafs.FileSystem
    base: str
    local: bool

    @classmethod
    def at(cls, location: str | Path) -> Archive:
        text = str(location)
        if "://" in text and not text.startswith("file://"):
            fs, base = pafs.FileSystem.from_uri(text)
            return cls(text, fs, base.rstrip("/"), False)
        path = Path(text.removeprefix("file://")).resolve()
        return cls(str(path), pafs.LocalFileSystem(), str(path), True)

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def write(self, relative: str, table: pa.Table) -> str:
        """``table`` at ``relative``, durably; read back and compared. Its SHA-256."""
        target = self.path(relative)
        if self.local:
            write_durably(Path(target), lambda fh: pq.write_table(table, fh))
        else:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(target) as out:
                pq.write_table(table, out)
        with self.fs.open_input_file(target) as fh:
            data = fh.read()
        back = pq.read_table(pa.BufferReader(data))
        if back.num_rows != table.num_rows or not back.equals(table):
            raise OSError(f"archive file {target} does not read back as written")
        return hashlib.sha256(data).hexdigest()

    def remove_orphans(self, folder: str, known: set[str]) -> int:
        """Delete the files under ``folder`` that no catalog row names (a stopped run's)."""
        try:
            found = self.fs.get_file_info(pafs.FileSelector(self.path(folder)))
        except FileNotFoundError:
            return 0
        removed = 0
        for info in found:
            relative = f"{folder}/{info.base_name}"
            if info.type == pafs.FileType.File and relative not in known:
                self.fs.delete_file(info.path)
                removed += 1
        return removed

    def read(self, files: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
        tables = []
        for f in files:
            with self.fs.open_input_file(self.path(f)) as fh:
                tables.append(pq.read_table(fh, columns=list(columns) if columns else None))
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def to_table(rows: Sequence[Any]) -> pa.Table:
    """Prediction rows (SQLAlchemy mappings) as the archive's table."""
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for row in rows:
        for c in COLUMNS:
            value = row[c]
            if c in _JSON:
                value = None if value is None else orjson.dumps(value).decode()
            elif c in ("created_at", "actual_at") and value is not None:
                value = as_utc(value)
            columns[c].append(value)
    return pa.table(columns, schema=SCHEMA)


def day_folder(model: str, day: str) -> str:
    return f"model={model}/date={day}"


@dataclass(frozen=True)
class Retention:
    """How long a model's rows stay in the live table; None keeps them."""

    model: str
    keep: timedelta | None


class LogArchiver:
    """Moves rows past retention from the live table into the archive, a batch at a time.

    ``hold(model)`` gives the ``seq`` after which a model's rows must stay live (a running
    canary or shadow judges them), or None."""

    def __init__(
        self,
        engine: Engine,
        archive: Archive,
        metrics: Metrics,
        retention: Sequence[Retention],
        hold: Callable[[str], int | None] = lambda _m: None,
        batch_rows: int = DEFAULT_ARCHIVE_BATCH_ROWS,
        renew: Callable[[], bool] = lambda: True,
        fenced: Callable[[Any], bool] = lambda _conn: True,
    ) -> None:
        """``renew`` extends this worker's lease before each batch; ``fenced(conn)``, inside
        the transaction that deletes rows and records files, says whether it still holds
        it. Either saying no stops the run (LeaseLost): files written meanwhile are left
        unrecorded, for whoever holds the lease to remove."""
        self.engine = engine
        self.archive = archive
        self.metrics = metrics
        self.retention = list(retention)
        self.hold = hold
        self.batch_rows = batch_rows
        self.renew = renew
        self.fenced = fenced
        for r in self.retention:
            seconds = r.keep.total_seconds() if r.keep is not None else float("nan")
            metrics.log_retention.labels(r.model).set(seconds)

    def run(self, now: datetime | None = None) -> dict[str, int]:
        """Archive every model's rows past its retention; rows archived per model. On a
        partitioned table, partitions are made ahead first, and whole days whose every row
        is due are archived and dropped; the rest leave in batches of rows."""
        now = now or datetime.now(UTC)
        done: dict[str, int] = {r.model: 0 for r in self.retention if r.keep is not None}
        with self.engine.begin() as conn:
            partitioned = partitions.is_partitioned(conn)
            if partitioned:
                partitions.ensure(conn, partitions.ahead(now))
        if partitioned and done:
            try:
                for model, moved in self._drop_days(now).items():
                    done[model] = done.get(model, 0) + moved
            except LeaseLost:
                log.info("prediction log: another worker took over retention")
                return done
            except Exception:
                for model in done:
                    self.metrics.log_archive_failures.labels(model).inc()
                log.exception("prediction log: archiving whole days failed; the rows stay live")
        for r in self.retention:
            if r.keep is None:
                continue
            try:
                while moved := self._retried(r.model, now - r.keep):
                    done[r.model] += moved
            except LeaseLost:
                log.info("prediction log: another worker took over retention")
                return done
            except Exception:
                self.metrics.log_archive_failures.labels(r.model).inc()
                log.exception("prediction log: archiving %s failed; the rows stay live", r.model)
        self.observe(now)
        return done

    # -- whole days (PostgreSQL partitions) ------------------------------------------------
    def _drop_days(self, now: datetime) -> dict[str, int]:
        """Archive, then drop, each day partition whose rows are all past their model's
        retention and held by no rollout."""
        cutoff = {r.model: now - r.keep for r in self.retention if r.keep is not None}
        with self.engine.connect() as conn:
            days = partitions.day_partitions(conn)
        moved: dict[str, int] = {}
        for day, name in sorted(days.items()):
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if end > max(cutoff.values()):
                break  # this day and the later ones hold rows no retention has reached
            with self.engine.connect() as conn:
                by_model = text(_sql("SELECT model, count(*) FROM {} GROUP BY model", name))
                counts: dict[str, int] = dict(conn.execute(by_model).all())
                due = all(m in cutoff and end <= cutoff[m] for m in counts) and (
                    bool(counts) or end <= min(cutoff.values())  # an old, empty day
                )
                if due:
                    due = not any(self._held(conn, name, m) for m in counts)
            if not due:  # a model kept longer, or a rollout, holds rows of this day
                continue
            try:
                done = self._drop_day(day, name, sorted(counts))
            except Changed as exc:  # a label landed meanwhile: the next run archives it again
                log.info("prediction log: %s", exc)
                continue
            for model, rows in done.items():
                moved[model] = moved.get(model, 0) + rows
        return moved

    def _held(self, conn: Any, name: str, model: str) -> bool:
        held = self.hold(model)
        if held is None:
            return False
        stmt = text(_sql("SELECT 1 FROM {} WHERE model = :m AND seq > :s LIMIT 1", name))
        return conn.execute(stmt, {"m": model, "s": held}).first() is not None

    def _drop_day(self, day: date, name: str, models: Sequence[str]) -> dict[str, int]:
        if not self.renew():
            raise LeaseLost()
        with self.engine.connect() as conn:
            facts = partitions.row_facts(conn, name)
        files: list[tuple[str, str, str, int, int, int, str]] = []
        ranges: dict[str, dict[str, tuple[int, int]]] = {}
        rows: dict[str, int] = {}
        for model in models:
            folder = day_folder(model, day.isoformat())
            self.archive.remove_orphans(folder, self._catalogued(model, day.isoformat()))
            rows[model], ranges[model], after = 0, {}, -1
            while True:
                stmt = text(_sql(_DAY_ROWS, name))
                with self.engine.connect() as conn:
                    part = [r._mapping for r in conn.execute(
                        stmt, {"m": model, "after": after, "n": self.batch_rows}
                    )]  # fmt: skip
                if not part:
                    break
                after = part[-1]["seq"]
                relative = f"{folder}/part-{part[0]['seq']:020d}-{after:020d}.parquet"
                digest = self.archive.write(relative, to_table(part))
                files.append((model, day.isoformat(), relative, part[0]["seq"], after,
                              len(part), digest))  # fmt: skip
                rows[model] += len(part)
                _merge(ranges[model], _id_ranges(part))
        with self.engine.begin() as conn:
            # No label may land between the rows being read and the partition dropped.
            conn.execute(text(f"LOCK TABLE {partitions.table(name)} IN SHARE ROW EXCLUSIVE MODE"))
            if partitions.row_facts(conn, name) != facts:
                raise Changed(f"{name} changed while it was archived; archiving it again")
            now = datetime.now(UTC)
            for model, d, relative, first, last, n, digest in files:
                conn.execute(insert(ArchiveFileRecord).values(
                    file=relative, model=model, day=d, first_seq=first, last_seq=last, rows=n,
                    sha256=digest, archived_at=now,
                ))  # fmt: skip
            for model, found in ranges.items():
                for prefix, (low, high) in found.items():
                    self._widen(conn, model, prefix, low, high)
            partitions.drop(conn, name)
            if not self.fenced(conn):
                raise LeaseLost()
        for model, n in rows.items():
            self.metrics.log_archived_rows.labels(model).inc(n)
            self.metrics.log_deleted_rows.labels(model).inc(n)
        log.info("prediction log: archived and dropped partition %s (%s)", name,
                 ", ".join(f"{n:,} rows of {m}" for m, n in rows.items()))  # fmt: skip
        return rows

    def observe(self, now: datetime | None = None) -> None:
        """Live rows and the oldest row's age, per model, as gauges."""
        now = now or datetime.now(UTC)
        stmt = select(
            PredictionRecord.model, func.count(), func.min(PredictionRecord.created_at)
        ).group_by(PredictionRecord.model)
        with self.engine.connect() as conn:
            for model, rows, oldest in conn.execute(stmt):
                self.metrics.log_live_rows.labels(model).set(rows)
                age = (now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
                self.metrics.log_oldest_age.labels(model).set(max(age, 0.0))

    # -- one batch -------------------------------------------------------------------------
    def _retried(self, model: str, cutoff: datetime) -> int:
        """One batch; again, with the labels, when some landed while it was archived."""
        while True:
            try:
                return self._batch(model, cutoff)
            except Changed:
                log.info("prediction log: %s rows got labels while archived; again", model)

    def _batch(self, model: str, cutoff: datetime) -> int:
        if not self.renew():
            raise LeaseLost()
        stmt = (
            select(*(getattr(PredictionRecord, c) for c in COLUMNS))
            .where(PredictionRecord.model == model, PredictionRecord.created_at < cutoff)
            .order_by(PredictionRecord.created_at, PredictionRecord.seq)  # the index's order
            .limit(self.batch_rows)
        )
        held = self.hold(model)
        if held is not None:
            stmt = stmt.where(PredictionRecord.seq <= held)
        with self.engine.connect() as conn:
            rows = [r._mapping for r in conn.execute(stmt)]
        if not rows:
            return 0
        files = []
        for day, part in _by_day(rows):
            folder = day_folder(model, day)
            removed = self.archive.remove_orphans(folder, self._catalogued(model, day))
            if removed:
                log.warning("prediction log: removed %d unrecorded archive file(s) of %s %s "
                            "(a stopped run's)", removed, model, day)  # fmt: skip
            table = to_table(part)
            relative = f"{folder}/part-{part[0]['seq']:020d}-{part[-1]['seq']:020d}.parquet"
            digest = self.archive.write(relative, table)
            files.append((day, relative, part, digest))
        self._commit(model, rows, files)
        self.metrics.log_archived_rows.labels(model).inc(len(rows))
        self.metrics.log_deleted_rows.labels(model).inc(len(rows))
        return len(rows)

    def _catalogued(self, model: str, day: str) -> set[str]:
        stmt = select(ArchiveFileRecord.file).where(
            ArchiveFileRecord.model == model, ArchiveFileRecord.day == day
        )
        with self.engine.connect() as conn:
            return {f for (f,) in conn.execute(stmt)}

    def _commit(self, model: str, rows: Sequence[Any], files: Sequence[Any]) -> None:
        """Delete the archived rows, record their files and id ranges: all or nothing. A
        row labelled since it was read makes the archive stale: Changed, nothing deleted."""
        unlabelled = [r["seq"] for r in rows if r["actual_at"] is None]
        labelled = [r["seq"] for r in rows if r["actual_at"] is not None]
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            deleted = 0
            for chunk in _chunks(unlabelled):
                deleted += conn.execute(
                    delete(PredictionRecord).where(
                        PredictionRecord.seq.in_(chunk), PredictionRecord.actual_at.is_(None)
                    )
                ).rowcount
            for chunk in _chunks(labelled):
                deleted += conn.execute(
                    delete(PredictionRecord).where(PredictionRecord.seq.in_(chunk))
                ).rowcount
            if deleted != len(rows):
                raise Changed()
            for day, relative, part, digest in files:
                conn.execute(
                    insert(ArchiveFileRecord).values(
                        file=relative, model=model, day=day, first_seq=part[0]["seq"],
                        last_seq=part[-1]["seq"], rows=len(part), sha256=digest, archived_at=now,
                    )
                )  # fmt: skip
            for prefix, (low, high) in _id_ranges(rows).items():
                self._widen(conn, model, prefix, low, high)
            if not self.fenced(conn):
                raise LeaseLost()

    @staticmethod
    def _widen(conn: Any, model: str, prefix: str, low: int, high: int) -> None:
        key = and_(ArchivedIdRange.model == model, ArchivedIdRange.prefix == prefix)
        found = conn.execute(select(ArchivedIdRange.low, ArchivedIdRange.high).where(key)).first()
        if found is None:
            conn.execute(
                insert(ArchivedIdRange).values(model=model, prefix=prefix, low=low, high=high)
            )
        else:
            conn.execute(
                update(ArchivedIdRange)
                .where(key)
                .values(low=min(low, found[0]), high=max(high, found[1]))
            )


def _by_day(rows: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
    days: dict[str, list[Any]] = {}
    for r in sorted(rows, key=lambda r: r["seq"]):
        days.setdefault(as_utc(r["created_at"]).date().isoformat(), []).append(r)
    yield from sorted(days.items())


def _chunks(values: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _sql(template: str, table: str) -> str:
    """``template`` with a partition's name in it, checked (names cannot be parameters)."""
    return template.format(partitions.table(table))  # nosec B608 - a checked table name


def _merge(into: dict[str, tuple[int, int]], more: dict[str, tuple[int, int]]) -> None:
    for prefix, (low, high) in more.items():
        was = into.get(prefix, (low, high))
        into[prefix] = (min(was[0], low), max(was[1], high))


def _id_ranges(rows: Sequence[Any]) -> dict[str, tuple[int, int]]:
    ranges: dict[str, tuple[int, int]] = {}
    for r in rows:
        parts = id_parts(r["id"])
        if parts is None:
            continue
        prefix, n = parts
        low, high = ranges.get(prefix, (n, n))
        ranges[prefix] = (min(low, n), max(high, n))
    return ranges


def catalogued_files(
    engine: Engine, model: str, since: datetime | None = None, until: datetime | None = None
) -> list[str]:
    """The model's archive files whose day overlaps [since, until), oldest first."""
    stmt = select(ArchiveFileRecord.file).where(ArchiveFileRecord.model == model)
    if since is not None:
        stmt = stmt.where(ArchiveFileRecord.day >= as_utc(since).date().isoformat())
    if until is not None:
        stmt = stmt.where(ArchiveFileRecord.day <= as_utc(until).date().isoformat())
    with engine.connect() as conn:
        return [f for (f,) in conn.execute(stmt.order_by(ArchiveFileRecord.first_seq))]


def export(
    engine: Engine,
    archive: Archive,
    model: str,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = DEFAULT_ARCHIVE_BATCH_ROWS,
) -> Iterator[pa.Table]:
    """The model's rows created in [since, until), archived then live, oldest first, in
    tables of the archive's columns (and ``model``)."""

    def in_range(table: pa.Table) -> pa.Table:
        keep = pa.array([True] * table.num_rows)
        created = table.column("created_at")
        if since is not None:
            keep = pa.compute.and_(keep, pa.compute.greater_equal(created, as_utc(since)))
        if until is not None:
            keep = pa.compute.and_(keep, pa.compute.less(created, as_utc(until)))
        out = table.filter(keep)
        return out.append_column("model", pa.array([model] * out.num_rows, pa.string()))

    for f in catalogued_files(engine, model, since, until):
        yield in_range(archive.read([f]))
    after = -1
    while True:
        stmt = (
            select(*(getattr(PredictionRecord, c) for c in COLUMNS))
            .where(PredictionRecord.model == model, PredictionRecord.seq > after)
            .order_by(PredictionRecord.seq)
            .limit(batch_rows)
        )
        if since is not None:
            stmt = stmt.where(PredictionRecord.created_at >= since)
        if until is not None:
            stmt = stmt.where(PredictionRecord.created_at < until)
        with engine.connect() as conn:
            rows = [r._mapping for r in conn.execute(stmt)]
        if not rows:
            return
        after = rows[-1]["seq"]
        yield in_range(to_table(rows))

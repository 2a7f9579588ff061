"""Engine, schema and migrations: SQLite (WAL) by default, or PostgreSQL by URL.

Those two are what the service supports and is tested on; any other database URL is
refused at start (``make_engine``), naming them. Migrations run under a lock held in the
database itself (PostgreSQL: a transaction-level advisory lock) or beside it (SQLite: a lock
file), so any number of workers and replicas starting together migrate once.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    insert,
    make_url,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from prediction_service.errors import ConfigurationError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
SUPPORTED = ("sqlite", "postgresql")
# pg_advisory_xact_lock's key for migrations: "pred" in ASCII.
MIGRATION_LOCK_KEY = 0x70726564


class Base(DeclarativeBase):
    pass


class PredictionRecord(Base):
    __tablename__ = "predictions"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    features: Mapped[dict[str, float]] = mapped_column(JSON)
    prediction: Mapped[Any] = mapped_column(JSON)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    # The door it came in by: native, v2, v2_grpc or mlflow.
    protocol: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Ground truth, filled in later by feedback.
    actual: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    actual_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # "shadow" for a shadow's prediction (answered to no one), paired with the champion's
    # row ``pair_id`` on the same input; None for the answers clients got.
    arm: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pair_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The request's OpenTelemetry trace (32 hex digits), when tracing is on.
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (
        Index("ix_predictions_model_seq", "model", "seq"),
        Index("ix_predictions_pair_id", "pair_id"),
        Index("ix_predictions_trace_id", "trace_id"),
        # Retention finds the oldest rows of a model without reading the newer ones.
        Index("ix_predictions_model_created_at", "model", "created_at"),
    )


class RetrainJobRecord(Base):
    __tablename__ = "retrain_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # queued, running, succeeded, failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    candidates: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    data_path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    promoted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    gate_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Who watches it ("host:pid" of the worker), and when it last said so (Unix seconds).
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        # At most one queued or running job per model, whichever worker or replica asks.
        Index(
            "ux_retrain_jobs_active_model",
            "model",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )


class TrafficRecord(Base):
    """The challenger share of a model's traffic and its last champion change, shared by
    every worker and replica."""

    __tablename__ = "traffic_splits"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    challenger_percent: Mapped[float] = mapped_column(Float, default=0.0)
    # A token of the last champion change made through the service: when it differs from
    # what a worker last saw, that worker reloads the model.
    champion_change: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The share of requests copied to the challenger as a shadow (answered by the champion).
    shadow_percent: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventRecord(Base):
    """A decision about a model (retrain triggered, canary started, promoted, ...) and why."""

    __tablename__ = "model_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    model: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_model_events_model_seq", "model", "seq"),)


class LeaseRecord(Base):
    """Who may act for a name (one model's automation) until ``expires_at`` (Unix seconds)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)


class ArchiveFileRecord(Base):
    """One Parquet file of archived predictions (storage/archive.py): it counts once this
    row exists, written in the transaction that deletes its rows from ``predictions``."""

    __tablename__ = "log_archive_files"

    file: Mapped[str] = mapped_column(String(512), primary_key=True)  # under the archive
    model: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_log_archive_files_model_day", "model", "day"),)


class ArchivedIdRange(Base):
    """Per model and id prefix (one per serving process), the counters of archived ids: how
    a feedback for a prediction no longer live is told it was archived (410), not unknown."""

    __tablename__ = "archived_id_ranges"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    low: Mapped[int] = mapped_column(BigInteger)
    high: Mapped[int] = mapped_column(BigInteger)


class AutomationStateRecord(Base):
    """What the automation of one model remembers between checks (drift streak, canary)."""

    __tablename__ = "automation_state"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def upsert_by_model(engine: Engine, record: Any, model: str, **values: Any) -> None:
    """Set ``values`` on the row of ``model`` in a table keyed by model, creating it if absent
    (one transaction; ``updated_at`` is now)."""
    values["updated_at"] = datetime.now(UTC)
    with engine.begin() as conn:
        found = conn.execute(update(record).where(record.model == model).values(**values))
        if not found.rowcount:
            conn.execute(insert(record).values(model=model, **values))


def as_utc(value: datetime) -> datetime:
    """A stored time, aware: SQLite hands datetimes back naive (all are UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utc_iso(value: Any) -> Any:
    """A stored time as ISO 8601 in UTC."""
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def make_engine(url: str) -> Engine:
    """An engine for a supported database; ConfigurationError for any other URL."""
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's ArgumentError, or a bad port
        raise ConfigurationError(f"the prediction database URL cannot be read: {exc}") from None
    if backend not in SUPPORTED:
        raise ConfigurationError(
            f"the prediction database {backend!r} is not supported: use SQLite "
            "(sqlite:///path.db, the default) or PostgreSQL (postgresql+psycopg://...)"
        )
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # connecting will fail; the service reports the database unreachable
        engine = create_engine(
            url, json_serializer=_json, connect_args={"timeout": 2.0, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, json_serializer=_json, pool_pre_ping=True)


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL; None for an in-memory database."""
    database = make_url(url).database
    return database if database and database != ":memory:" else None


def sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite engine; None for any other database, or one in memory."""
    return _sqlite_path(str(engine.url)) if engine.dialect.name == "sqlite" else None


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None  # the package ships its migrations
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _file_lock(path: str | None) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database (none for one in memory)."""
    if path is None:
        yield
        return
    with open(f"{path}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine, to: str | None = None) -> tuple[str | None, str]:
    """Bring the schema to the latest revision (or to the revision ``to``: a test or bench
    of an older schema), once however many processes ask at the same moment: each waits
    for the lock, and whoever comes after the first finds it there. Returns the revisions
    before and after."""
    head = to or head_revision()
    sqlite = engine.dialect.name == "sqlite"
    with _file_lock(sqlite_file(engine)):
        with engine.begin() as conn:
            if not sqlite:  # held until this transaction ends, migrations included
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            before = current_revision(conn)
            if before != head:
                config = _config()
                config.attributes["connection"] = conn
                command.upgrade(config, head)
    if before != head:
        log.info("prediction database migrated from %s to %s", before or "empty", head)
    return before, head


def reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - health reports any failure as unreachable
        return False

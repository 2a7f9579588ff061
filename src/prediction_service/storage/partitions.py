"""PostgreSQL: the ``predictions`` table range-partitioned by day (``created_at``, UTC).

One partition a day, ``predictions_pYYYYMMDD``, made ahead of time (today and the next
``AHEAD_DAYS``) at start and at every retention run; a ``predictions_default`` partition
takes a row no day partition covers (a clock far off), so an insert never fails for want
of one, and its rows move to their day's partition when that is made. Retention drops a
whole day's partition once every row in it is archived (``storage/archive.py``) instead of
deleting rows one by one.

A partitioned table's unique constraints must hold the partition key: the primary key is
``(seq, created_at)`` and ``(id, created_at)`` is unique (a retried insert is refused; ids
are unique by construction: a random per-process prefix and a counter). SQLite keeps one
table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

PARENT = "predictions"
DEFAULT = "predictions_default"
AHEAD_DAYS = 3
_NAME = re.compile(r"^predictions_p(\d{8})$")
_TABLE = re.compile(r"^predictions(_p\d{8}|_default|_plain|_partitioned)?$")
# SQL here names tables, which cannot be bound parameters: every name goes through table(),
# so only the names this module makes reach a statement (the nosec B608 marks below).
INDEXES = (
    ("ix_predictions_model_seq", "(model, seq)"),
    ("ix_predictions_pair_id", "(pair_id)"),
    ("ix_predictions_trace_id", "(trace_id)"),
    ("ix_predictions_model_created_at", "(model, created_at)"),
    # Unique as the plain table's id is, as far as a partitioned table allows: a retried
    # insert of the same rows is refused; ids themselves are unique by construction.
    ("ux_predictions_id_created_at", "(id, created_at)"),
)


def table(name: str) -> str:
    """``name``, if it is one of the prediction tables' names; else ValueError."""
    if not _TABLE.match(name):
        raise ValueError(f"not a prediction table: {name!r}")
    return name


def partition_name(day: date) -> str:
    return f"predictions_p{day:%Y%m%d}"


def _bounds(day: date) -> tuple[str, str]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"name": PARENT},
    ).first()
    return found is not None


def day_partitions(conn: Connection) -> dict[date, str]:
    """Every day partition, by day."""
    rows = conn.execute(
        text(
            "SELECT child.relname FROM pg_inherits i "
            "JOIN pg_class parent ON parent.oid = i.inhparent "
            "JOIN pg_class child ON child.oid = i.inhrelid WHERE parent.relname = :name"
        ),
        {"name": PARENT},
    )
    out = {}
    for (name,) in rows:
        found = _NAME.match(name)
        if found:
            out[datetime.strptime(found[1], "%Y%m%d").date()] = name
    return out


def ensure(conn: Connection, days: Iterable[date]) -> list[str]:
    """Make the day partitions of ``days`` that are missing; their names. Rows the default
    partition holds for such a day move into it."""
    have = day_partitions(conn)
    made = []
    for day in sorted(set(days)):
        if day in have:
            continue
        name = table(partition_name(day))
        low, high = _bounds(day)
        count = (
            "SELECT count(*) FROM predictions_default "
            "WHERE created_at >= :low AND created_at < :high"
        )
        waiting = conn.execute(
            text(count),
            {"low": low, "high": high},
        ).scalar()
        if waiting:  # a partition cannot be attached over rows the default holds for it
            conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {DEFAULT}"))
        conn.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        )
        if waiting:
            moved = (
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= :low AND "  # nosec B608
                f"created_at < :high RETURNING *) INSERT INTO {table(name)} SELECT * FROM moved"
            )
            conn.execute(text(moved), {"low": low, "high": high})
            conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {DEFAULT} DEFAULT"))
            log.warning(
                "prediction log: moved %d rows of %s from the default partition", waiting, day
            )
        made.append(name)
    return made


def ahead(now: datetime | None = None) -> list[date]:
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return [today + timedelta(days=k) for k in range(-1, AHEAD_DAYS + 1)]


def convert(conn: Connection) -> None:
    """The plain table as a partitioned one, every row kept (a migration; under its lock)."""
    if is_partitioned(conn):
        return
    conn.execute(text(f"ALTER TABLE {PARENT} RENAME TO predictions_plain"))
    conn.execute(
        text(
            f"CREATE TABLE {PARENT} (LIKE predictions_plain INCLUDING DEFAULTS "
            "INCLUDING GENERATED) PARTITION BY RANGE (created_at)"
        )
    )
    conn.execute(text(f"ALTER TABLE {PARENT} ADD PRIMARY KEY (seq, created_at)"))
    conn.execute(text(f"CREATE TABLE {DEFAULT} PARTITION OF {PARENT} DEFAULT"))
    span = conn.execute(
        text("SELECT min(created_at), max(created_at) FROM predictions_plain")
    ).one()
    days: list[date] = ahead()
    if span[0] is not None:
        first, last = span[0].astimezone(UTC).date(), span[1].astimezone(UTC).date()
        days += [first + timedelta(days=k) for k in range((last - first).days + 1)]
    ensure(conn, days)
    _move_rows(conn, "predictions_plain")
    for name, columns in INDEXES:
        unique = "UNIQUE " if name.startswith("ux_") else ""
        conn.execute(text(f"CREATE {unique}INDEX {name} ON {PARENT} {columns}"))


def unconvert(conn: Connection) -> None:
    """Back to one plain table (the migration's downgrade), every row kept."""
    if not is_partitioned(conn):
        return
    conn.execute(text(f"ALTER TABLE {PARENT} RENAME TO predictions_partitioned"))
    conn.execute(text(f"CREATE TABLE {PARENT} (LIKE predictions_partitioned INCLUDING DEFAULTS)"))
    _move_rows(conn, "predictions_partitioned")
    conn.execute(text(f"ALTER TABLE {PARENT} ADD PRIMARY KEY (seq)"))
    conn.execute(text(f"ALTER TABLE {PARENT} ADD CONSTRAINT predictions_id_key UNIQUE (id)"))
    for name, columns in INDEXES:
        if not name.startswith("ux_"):
            conn.execute(text(f"CREATE INDEX {name} ON {PARENT} {columns}"))


FACTS = "SELECT count(*), count(actual_at), max(actual_at) FROM {}"


def _move_rows(conn: Connection, old: str) -> None:
    """Every row of the renamed table ``old`` into the new ``predictions``, which takes over
    its ``seq`` sequence (owned by the old column, it would go with it); then drop it."""
    conn.execute(text(f"INSERT INTO {PARENT} SELECT * FROM {table(old)}"))  # nosec B608
    sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'seq')"), {"t": old}).scalar()
    if sequence:
        conn.execute(text(f"ALTER SEQUENCE {sequence} OWNED BY {PARENT}.seq"))
    conn.execute(text(f"DROP TABLE {table(old)} CASCADE"))


def drop(conn: Connection, name: str) -> None:
    conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {table(name)}"))
    conn.execute(text(f"DROP TABLE {table(name)}"))


def row_facts(conn: Connection, name: str) -> tuple[Any, ...]:
    """(rows, labelled rows, latest label time) of a partition: what must not change
    between its rows being archived and it being dropped."""
    return tuple(conn.execute(text(FACTS.format(table(name)))).one())  # nosec B608 - a checked name

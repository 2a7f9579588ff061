"""The model event log: each decision about a model (retrain triggered, canary started,
promoted, rolled back) and why, shared by every worker and replica."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from prediction_service.domain import EVENT_TYPES, EventType, ModelEvent
from prediction_service.metrics import Metrics
from prediction_service.storage.db import EventRecord, make_engine, migrate, utc_iso

log = logging.getLogger(__name__)


class EventStore:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def add(
        self,
        model: str,
        type: EventType,
        reason: str,
        version: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> ModelEvent:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        row = {
            "model": model,
            "type": type,
            "at": datetime.now(UTC),
            "version": version,
            "reason": reason,
            "details": details or {},
        }
        with self.engine.begin() as conn:
            conn.execute(insert(EventRecord).values(**row))
        self.metrics.model_events.labels(model, type).inc()
        log.info("%s %s%s: %s", model, type, f" (version {version})" if version else "", reason)
        return _event(row)

    def record(self, model: str, type: EventType, reason: str, version: str | None = None,
               details: dict[str, Any] | None = None) -> None:  # fmt: skip
        """``add``, for callers whose own work is done: a database failure is logged, not
        raised (the change it describes has happened)."""
        try:
            self.add(model, type, reason, version, details)
        except Exception as exc:  # noqa: BLE001
            log.error("could not record the %s event of %s (%s): %s", type, model, reason, exc)

    def list(
        self, model: str, limit: int = 100, types: Sequence[str] | None = None
    ) -> list[ModelEvent]:
        """Newest first."""
        stmt = (
            select(EventRecord)
            .where(EventRecord.model == model)
            .order_by(EventRecord.seq.desc())
            .limit(limit)
        )
        if types:
            stmt = stmt.where(EventRecord.type.in_(types))
        with self.engine.connect() as conn:
            return [_event(r._mapping) for r in conn.execute(stmt)]


@contextmanager
def standalone(database_url: str) -> Iterator[EventStore | None]:
    """The event log for a command run outside the service (training, offline scoring).
    None, and a warning on stderr, when the prediction database cannot be reached: the
    command's own work is done, and losing its events must not undo it."""
    try:
        engine = make_engine(database_url)
        migrate(engine)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: events not recorded (prediction database: {exc})", file=sys.stderr)
        yield None
        return
    try:
        yield EventStore(engine, Metrics())
    finally:
        engine.dispose()


def _event(row: Any) -> ModelEvent:
    return ModelEvent.model_validate(
        {k: utc_iso(row[k]) for k in ("type", "at", "version", "reason", "details")}
    )

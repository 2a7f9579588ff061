"""What the automation keeps in the database, shared by every worker and replica: the events
(each decision and why), the leases (who acts for a model), and each model's state."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from prediction_service.metrics import Metrics
from prediction_service.storage.db import (
    AutomationStateRecord,
    EventRecord,
    LeaseRecord,
    upsert_by_model,
    utc_iso,
)

log = logging.getLogger(__name__)

EventType = Literal[
    "retrain_triggered", "retrain_succeeded", "retrain_failed", "canary_started",
    "promoted", "rolled_back",
]  # fmt: skip
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class EventStore:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def add(
        self,
        model: str,
        type: str,
        reason: str,
        version: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
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

    def record(self, model: str, type: str, reason: str, version: str | None = None,
               details: dict[str, Any] | None = None) -> None:  # fmt: skip
        """``add``, for callers whose own work is done: a database failure is logged, not
        raised (the change it describes has happened)."""
        try:
            self.add(model, type, reason, version, details)
        except Exception as exc:  # noqa: BLE001
            log.error("could not record the %s event of %s (%s): %s", type, model, reason, exc)

    def list(
        self, model: str, limit: int = 100, types: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
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
            return [_event(dict(r._mapping)) for r in conn.execute(stmt)]


def _event(row: dict[str, Any]) -> dict[str, Any]:
    return {k: utc_iso(row[k]) for k in ("type", "at", "version", "reason", "details")}


class LeaseStore:
    """Leases with expiry: a holder that dies stops renewing, and after ``ttl_s`` another
    takes over. Taking one is a single conditional UPDATE (or an INSERT that a primary key
    lets only one writer win), so it is atomic on SQLite and PostgreSQL alike."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew ``name`` for ``ttl_s`` seconds; False while someone else holds it."""
        now = time.time()
        taken = (
            update(LeaseRecord)
            .where(
                LeaseRecord.name == name,
                or_(LeaseRecord.holder == holder, LeaseRecord.expires_at < now),
            )
            .values(holder=holder, expires_at=now + ttl_s)
        )
        with self.engine.begin() as conn:
            if conn.execute(taken).rowcount:
                return True
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(LeaseRecord).values(name=name, holder=holder, expires_at=now + ttl_s)
                )
            return True
        except IntegrityError:  # the row exists: held by someone else
            return False

    def release(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(LeaseRecord).where(LeaseRecord.name == name, LeaseRecord.holder == holder)
            )

    def holder(self, name: str) -> str | None:
        stmt = select(LeaseRecord.holder).where(
            LeaseRecord.name == name, LeaseRecord.expires_at >= time.time()
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar()


class StateStore:
    """One JSON document per model."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, model: str) -> dict[str, Any]:
        stmt = select(AutomationStateRecord.state).where(AutomationStateRecord.model == model)
        with self.engine.connect() as conn:
            state = conn.execute(stmt).scalar()
        return dict(state) if state else {}

    def put(self, model: str, state: dict[str, Any]) -> None:
        upsert_by_model(self.engine, AutomationStateRecord, model, state=state)

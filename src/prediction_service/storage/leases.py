"""Leases: who acts for a name (one model's automation) until when, across replicas."""

from __future__ import annotations

import time

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from prediction_service.storage.db import LeaseRecord


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

    def fence(self, conn: Connection, name: str, holder: str) -> bool:
        """Inside a transaction, after its first write: whether ``holder`` still holds
        ``name``, so that work done under the lease commits only while it is held. On
        PostgreSQL the lease's row stays locked until the commit; on SQLite the transaction
        holds the database's one write lock, which taking the lease needs."""
        stmt = select(LeaseRecord.holder).where(
            LeaseRecord.name == name,
            LeaseRecord.holder == holder,
            LeaseRecord.expires_at >= time.time(),
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return conn.execute(stmt).first() is not None

    def holder(self, name: str) -> str | None:
        stmt = select(LeaseRecord.holder).where(
            LeaseRecord.name == name, LeaseRecord.expires_at >= time.time()
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar()

"""Retrain jobs, persisted so they survive a restart and every replica sees them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, or_, select, update

from prediction_service.domain import ACTIVE, RetrainJob, TrainingOutcome
from prediction_service.storage.db import RetrainJobRecord, utc_iso

_COLUMNS = tuple(name for name in RetrainJob.model_fields if name not in ("progress", "log_tail"))


def _job(row: Any) -> RetrainJob:
    data = row._mapping
    return RetrainJob.model_validate({k: utc_iso(data[k]) for k in _COLUMNS})


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        job_id: str,
        model: str,
        candidates: list[str] | None,
        data_path: str | None,
        owner: str | None = None,
    ) -> RetrainJob:
        with self.engine.begin() as conn:
            conn.execute(
                insert(RetrainJobRecord).values(
                    id=job_id,
                    model=model,
                    status="queued",
                    created_at=datetime.now(UTC),
                    candidates=candidates,
                    data_path=data_path,
                    owner=owner,
                    heartbeat_at=time.time(),
                )
            )
        job = self.get(job_id)
        assert job is not None  # written just now, in this transaction's database
        return job

    def heartbeat(self, owner: str) -> None:
        """``owner`` still watches its unfinished jobs."""
        with self.engine.begin() as conn:
            conn.execute(
                update(RetrainJobRecord)
                .where(RetrainJobRecord.owner == owner, RetrainJobRecord.status.in_(ACTIVE))
                .values(heartbeat_at=time.time())
            )

    def unfinished(self) -> list[tuple[str, str | None, float | None]]:
        """(id, owner, heartbeat_at) of every queued or running job."""
        stmt = select(
            RetrainJobRecord.id, RetrainJobRecord.owner, RetrainJobRecord.heartbeat_at
        ).where(RetrainJobRecord.status.in_(ACTIVE))
        with self.engine.connect() as conn:
            return [(i, o, h) for i, o, h in conn.execute(stmt)]

    def mark_running(self, job_id: str) -> None:
        self._update(job_id, status="running", started_at=datetime.now(UTC))

    def _update(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(RetrainJobRecord).where(RetrainJobRecord.id == job_id).values(**values)
            )

    def finish(self, job_id: str, status: str, error: str | None, unless: str) -> bool:
        """End a job; False when it had ended already (another replica watching the same
        cluster Job ended it), except with the error ``unless``: the mark a starting worker
        leaves on jobs it cannot tell are another worker's, which the real end replaces."""
        stmt = (
            update(RetrainJobRecord)
            .where(
                RetrainJobRecord.id == job_id,
                or_(RetrainJobRecord.status.in_(ACTIVE), RetrainJobRecord.error == unless),
            )
            .values(status=status, finished_at=datetime.now(UTC), error=error)
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def record_outcome(
        self, job_id: str, outcome: TrainingOutcome | None, error: str | None
    ) -> None:
        """What the training process reports, wherever it runs: the outcome (version,
        promotion, metrics) or why it failed. The job's status is the runner's to set."""
        values: dict[str, Any] = {"error": error}
        if outcome:
            values.update(
                version=outcome.version,
                promoted=outcome.promoted,
                gate_reason=outcome.reason,
                metrics=outcome.metrics,
            )
        self._update(job_id, **values)

    def get(self, job_id: str) -> RetrainJob | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RetrainJobRecord).where(RetrainJobRecord.id == job_id)
            ).first()
        return _job(row) if row else None

    def list(self, model: str | None = None, limit: int = 50) -> list[RetrainJob]:
        stmt = select(RetrainJobRecord).order_by(RetrainJobRecord.created_at.desc()).limit(limit)
        if model is not None:
            stmt = stmt.where(RetrainJobRecord.model == model)
        with self.engine.connect() as conn:
            return [_job(r) for r in conn.execute(stmt)]

    def active(self, model: str) -> RetrainJob | None:
        stmt = select(RetrainJobRecord).where(
            RetrainJobRecord.model == model, RetrainJobRecord.status.in_(ACTIVE)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _job(row) if row else None

    def fail_interrupted(self, reason: str, job_ids: Sequence[str]) -> int:
        """Jobs left queued or running by a worker that died: mark them failed."""
        if not job_ids:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                update(RetrainJobRecord)
                .where(RetrainJobRecord.id.in_(job_ids), RetrainJobRecord.status.in_(ACTIVE))
                .values(status="failed", error=reason, finished_at=datetime.now(UTC))
            )
        return int(result.rowcount or 0)

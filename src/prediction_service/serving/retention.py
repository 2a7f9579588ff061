"""Retention of the prediction log, run by one worker or replica at a time.

Each model keeps its rows for its spec's ``serving.log_retention``, else the deployment's
``PREDICT_LOG_RETENTION`` (unset: forever). Whoever holds the ``log-retention`` lease moves
older rows to the archive (``storage/archive.py``), except the rows a running shadow or
canary still judges (those after the stage's start stay until it ends).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import datetime

from sqlalchemy import Engine

from prediction_service.metrics import Metrics
from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec
from prediction_service.storage.archive import Archive, LogArchiver, Retention
from prediction_service.storage.automation_state import StateStore
from prediction_service.storage.leases import LeaseStore

log = logging.getLogger(__name__)
LEASE = "log-retention"


def retention_of(specs: dict[str, ModelSpec], settings: Settings) -> list[Retention]:
    return [
        Retention(name, spec.serving.log_retention or settings.log_retention)
        for name, spec in specs.items()
    ]


class LogRetention:
    def __init__(
        self,
        engine: Engine,
        specs: dict[str, ModelSpec],
        settings: Settings,
        metrics: Metrics,
        leases: LeaseStore,
        states: StateStore,
    ) -> None:
        self.retention = retention_of(specs, settings)
        self.active = any(r.keep is not None for r in self.retention)
        self.leases = leases
        self.states = states
        # Renewed before every batch: it runs out only if this worker stalls or dies.
        self.lease_s = max(3 * settings.log_retention_interval_s, 60.0)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.archiver = LogArchiver(
            engine, Archive.at(settings.archive_location), metrics, self.retention,
            hold=self.hold, batch_rows=settings.log_archive_batch_rows,
            renew=lambda: leases.acquire(LEASE, self.holder, self.lease_s),
            fenced=lambda conn: leases.fence(conn, LEASE, self.holder),
        )  # fmt: skip

    def hold(self, model: str) -> int | None:
        """The last row a running shadow or canary of ``model`` does not judge (rows after
        it stay live until the stage ends), or None."""
        state = self.states.get(model)
        stages = [s.after_seq for s in (state.shadow, state.canary) if s is not None]
        return min(stages) if stages else None

    def tick(self) -> None:
        self.run()

    def run(self, now: datetime | None = None) -> dict[str, int]:
        """One run, if this process holds the lease (taking it when free); ``now`` moves
        the clock (a test's simulated month). Rows archived per model."""
        if not self.active or not self.leases.acquire(LEASE, self.holder, self.lease_s):
            return {}
        moved = self.archiver.run(now)
        if any(moved.values()):
            log.info("prediction log: archived %s", ", ".join(f"{n:,} rows of {m}"
                     for m, n in moved.items() if n))  # fmt: skip
        return moved

    def release(self) -> None:
        self.leases.release(LEASE, self.holder)

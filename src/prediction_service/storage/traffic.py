"""Traffic splits and champion changes, shared by every worker and replica."""

from __future__ import annotations

import secrets
from typing import NamedTuple

from sqlalchemy import Engine, select

from prediction_service.storage.db import TrafficRecord, upsert_by_model


class Split(NamedTuple):
    """What every worker follows of a model: its challenger's share of the answers, a token
    of the last change of its champion made through the service, and the share of requests
    copied to the challenger as a shadow."""

    percent: float = 0.0
    champion_change: str | None = None
    shadow_percent: float = 0.0


class TrafficStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self) -> dict[str, Split]:
        columns = (
            TrafficRecord.model, TrafficRecord.challenger_percent, TrafficRecord.champion_change,
            TrafficRecord.shadow_percent,
        )  # fmt: skip
        with self.engine.connect() as conn:
            return {
                m: Split(float(p), c, float(s or 0.0))
                for m, p, c, s in conn.execute(select(*columns))
            }

    def set(self, model: str, percent: float) -> None:
        upsert_by_model(self.engine, TrafficRecord, model, challenger_percent=percent)

    def set_shadow(self, model: str, percent: float) -> None:
        upsert_by_model(self.engine, TrafficRecord, model, shadow_percent=percent)

    def champion_moved(self, model: str) -> str:
        """Record a change of ``model``'s champion; the change's token."""
        token = secrets.token_hex(8)
        upsert_by_model(self.engine, TrafficRecord, model, champion_change=token)
        return token

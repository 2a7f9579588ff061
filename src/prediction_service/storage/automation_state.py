"""What the automation of each model remembers between checks, one typed document a model."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from sqlalchemy import Engine, select

from prediction_service.domain import AUTOMATION_STATE_VERSION, AutomationState
from prediction_service.storage.db import AutomationStateRecord, upsert_by_model

log = logging.getLogger(__name__)


class StateStore:
    """One JSON document per model, read and written as an ``AutomationState``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, model: str) -> AutomationState:
        """The stored state; a fresh one when there is none, or when the stored one is of a
        newer service (a rollback of the service) or unreadable: the automation then starts
        over, which is what a new model does."""
        stmt = select(AutomationStateRecord.state).where(AutomationStateRecord.model == model)
        with self.engine.connect() as conn:
            stored = conn.execute(stmt).scalar()
        if not stored:
            return AutomationState()
        try:
            state = AutomationState.model_validate(stored)
        except ValidationError as exc:
            log.warning("automation state of %s unreadable, starting over: %s", model, exc)
            return AutomationState()
        if state.schema_version > AUTOMATION_STATE_VERSION:
            log.warning(
                "automation state of %s is version %d, newer than this service's %d; "
                "starting over",
                model,
                state.schema_version,
                AUTOMATION_STATE_VERSION,
            )
            return AutomationState()
        return state

    def put(self, model: str, state: AutomationState) -> None:
        upsert_by_model(
            self.engine, AutomationStateRecord, model, state=state.model_dump(mode="json")
        )

"""Typed dependencies so routes read like prose; all of them come from the one ``Core``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from prediction_service.core import Core
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.serving.model_store import ModelStore
from prediction_service.serving.monitoring import Monitor
from prediction_service.serving.retrain import RetrainRunner
from prediction_service.storage.prediction_log import PredictionLog


def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


def _store(core: CoreDep) -> ModelStore:
    return core.store


def _log(core: CoreDep) -> PredictionLog:
    return core.prediction_log


def _lifecycle(core: CoreDep) -> ModelLifecycle:
    return core.lifecycle


def _retrain(core: CoreDep) -> RetrainRunner:
    return core.retrain


def _monitor(core: CoreDep) -> Monitor:
    return core.monitor


StoreDep = Annotated[ModelStore, Depends(_store)]
LogDep = Annotated[PredictionLog, Depends(_log)]
LifecycleDep = Annotated[ModelLifecycle, Depends(_lifecycle)]
RetrainDep = Annotated[RetrainRunner, Depends(_retrain)]
MonitorDep = Annotated[Monitor, Depends(_monitor)]

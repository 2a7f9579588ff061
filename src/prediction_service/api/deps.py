"""Typed dependencies so routes read like prose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from prediction_service.metrics import Metrics
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.serving.model_store import ModelStore
from prediction_service.serving.monitoring import Monitor
from prediction_service.serving.retrain import RetrainRunner
from prediction_service.serving.service import PredictionService
from prediction_service.storage.prediction_log import PredictionLog


def _state(attr: str) -> Callable[[Request], Any]:
    """A dependency returning what the lifespan put on ``app.state`` under ``attr``."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, attr)

    return get


ServiceDep = Annotated[PredictionService, Depends(_state("service"))]
StoreDep = Annotated[ModelStore, Depends(_state("store"))]
LogDep = Annotated[PredictionLog, Depends(_state("prediction_log"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
LifecycleDep = Annotated[ModelLifecycle, Depends(_state("lifecycle"))]
RetrainDep = Annotated[RetrainRunner, Depends(_state("retrain"))]
MonitorDep = Annotated[Monitor, Depends(_state("monitor"))]

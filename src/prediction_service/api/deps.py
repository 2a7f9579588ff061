"""Typed dependencies so routes read like prose; all of them come from the one ``Services``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from prediction_service.services import Services
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.serving.model_store import ModelStore
from prediction_service.serving.monitoring import Monitor
from prediction_service.serving.retrain import RetrainRunner
from prediction_service.storage.prediction_log import PredictionLog


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _store(services: ServicesDep) -> ModelStore:
    return services.store


def _log(services: ServicesDep) -> PredictionLog:
    return services.prediction_log


def _lifecycle(services: ServicesDep) -> ModelLifecycle:
    return services.lifecycle


def _retrain(services: ServicesDep) -> RetrainRunner:
    return services.retrain


def _monitor(services: ServicesDep) -> Monitor:
    return services.monitor


StoreDep = Annotated[ModelStore, Depends(_store)]
LogDep = Annotated[PredictionLog, Depends(_log)]
LifecycleDep = Annotated[ModelLifecycle, Depends(_lifecycle)]
RetrainDep = Annotated[RetrainRunner, Depends(_retrain)]
MonitorDep = Annotated[Monitor, Depends(_monitor)]

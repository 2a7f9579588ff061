"""Typed dependencies so routes read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from prediction_service.metrics import Metrics
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.serving.model_store import ModelStore
from prediction_service.serving.retrain import RetrainRunner
from prediction_service.serving.service import PredictionService
from prediction_service.settings import Settings
from prediction_service.storage.prediction_log import PredictionLog


def _service(request: Request) -> PredictionService:
    return request.app.state.service


def _store(request: Request) -> ModelStore:
    return request.app.state.store


def _log(request: Request) -> PredictionLog:
    return request.app.state.prediction_log


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _lifecycle(request: Request) -> ModelLifecycle:
    return request.app.state.lifecycle


def _runner(request: Request) -> RetrainRunner:
    return request.app.state.retrain


def _settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[PredictionService, Depends(_service)]
StoreDep = Annotated[ModelStore, Depends(_store)]
LogDep = Annotated[PredictionLog, Depends(_log)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
LifecycleDep = Annotated[ModelLifecycle, Depends(_lifecycle)]
RetrainDep = Annotated[RetrainRunner, Depends(_runner)]
SettingsDep = Annotated[Settings, Depends(_settings)]

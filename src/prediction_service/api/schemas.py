"""Response models of the FastAPI routes that are the HTTP layer's own.

The core's values (``domain.py``) are the responses of the routes that return them as
they are; each protocol's wire models live in its module (``protocols/``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prediction_service.domain import (
    LoggedPrediction,
    LogStatus,
    ModelEvent,
    RetrainJob,
    ShadowAgreement,
)
from prediction_service.protocols.native import ErrorOut


class _Out(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


ERROR_MEANING = {
    400: "a request the protocol cannot use",
    401: "no valid API key",
    403: "the key lacks the scope, or the API is disabled",
    404: "unknown model, version, job or prediction",
    405: "method not allowed",
    409: "conflicts with the current state",
    410: "the prediction is archived (older than the log's retention) and takes no feedback",
    413: "too many rows, or a body over the size limit",
    415: "unsupported content type",
    422: "invalid input; the message names each bad field",
    429: "too many requests (Retry-After says when to come back)",
    501: "the served version cannot be explained (its estimator has no exact explainer, or it was trained before explanations)",
    503: "the model is not loaded",
}


def errors(*codes: int, model: type[BaseModel] = ErrorOut) -> dict[int | str, dict[str, Any]]:
    """The error responses a route can answer, for its OpenAPI operation."""
    return {code: {"model": model, "description": ERROR_MEANING[code]} for code in codes}


# -- service -----------------------------------------------------------------------------
class ServiceInfo(_Out):
    name: str
    version: str
    models: list[str]
    links: dict[str, str]


class ModelStatus(_Out):
    loaded: bool
    version: str | None
    registered_name: str
    error: str | None


class Reachable(_Out):
    reachable: bool


class Health(_Out):
    status: Literal["ok", "degraded"]
    version: str
    models: dict[str, ModelStatus]
    database: Reachable
    registry: Reachable
    uptime_s: float | None = Field(default=None, description="with the read scope")
    worker_pid: int | None = Field(default=None, description="with the read scope")
    memory_rss_bytes: int | None = Field(default=None, description="with the read scope")
    prediction_log: LogStatus | None = Field(default=None, description="with the read scope")


class Ready(_Out):
    ready: bool
    detail: str | None = None


# -- models ------------------------------------------------------------------------------
class FeatureInfo(_Out):
    name: str
    type: str
    min: float
    max: float


class TrafficInfo(_Out):
    challenger_version: str | None
    challenger_percent: float = Field(description="the challenger's share of the answers")
    shadow_percent: float = Field(
        default=0.0, description="the share of requests copied to the challenger as a shadow"
    )
    stage: Literal["shadow", "canary"] | None = Field(
        default=None, description="the live rollout stage the challenger is in"
    )
    agreement: ShadowAgreement | None = Field(
        default=None, description="while shadowing: the shadow against the champion"
    )


class GateInfo(_Out):
    decision: str | None
    reason: str | None


class ModelInfo(_Out):
    name: str
    registered_name: str
    task: str
    description: str
    features: list[FeatureInfo]
    classes: list[str] | None
    loaded: bool
    traffic: TrafficInfo
    error: str | None = None
    version: str | None = None
    aliases: list[str] | None = None
    run_id: str | None = None
    metrics: dict[str, float] | None = None
    params: dict[str, str] | None = None
    dataset_digest: str | None = None
    spec_digest: str | None = None
    git_commit: str | None = None
    gate: GateInfo | None = None
    trained_at: str | None = None
    loaded_at: str | None = None
    report: str | None = Field(
        default=None, description="the training report of the served version (an MLflow URI)"
    )
    predictor: str | None = Field(
        default=None,
        description="what serves the version: portable (the arrays stored beside it), direct "
        "(the same predictor, made from the loaded model) or estimator (the model's own "
        "predict, for an estimator that cannot be made portable)",
    )
    batching: str | None = Field(
        default=None, description="adaptive batching: on (its limits) or off (and why)"
    )


class ModelEvents(_Out):
    events: list[ModelEvent] = Field(description="newest first")


# -- retraining, history -------------------------------------------------------------
class RetrainJobs(_Out):
    items: list[RetrainJob]


class HistoryPage(_Out):
    items: list[LoggedPrediction]
    next_cursor: int | None

"""Response models of every route, and the documented request bodies of the lanes.

Record and batch models are generated per spec by the codec (``serving/codec.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prediction_service.storage.automation import EventType


class _Out(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


# -- errors ------------------------------------------------------------------------------
class FieldError(_Out):
    field: str
    message: str
    type: str
    input: Any = None


class ErrorOut(_Out):
    detail: str
    errors: list[FieldError] | None = None


ERROR_MEANING = {
    400: "a request the protocol cannot use",
    401: "no valid API key",
    403: "the key lacks the scope, or the API is disabled",
    404: "unknown model, version, job or prediction",
    405: "method not allowed",
    409: "conflicts with the current state",
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


# -- native predictions ------------------------------------------------------------------
class PredictionOut(_Out):
    model: str
    registered_name: str
    version: str
    prediction: float | str
    probabilities: dict[str, float] | None = Field(
        default=None, description="Probability of each class (classifiers only)."
    )
    prediction_id: str
    latency_ms: float


class BatchItemOut(_Out):
    prediction_id: str
    prediction: float | str
    probabilities: dict[str, float] | None = None


class BatchOut(_Out):
    model: str
    registered_name: str
    version: str
    count: int
    predictions: list[BatchItemOut]
    latency_ms: float


# -- explanations ------------------------------------------------------------------------
class ExplanationItemOut(_Out):
    prediction_id: str
    prediction: float | str
    probabilities: dict[str, float] | None = Field(
        default=None, description="Probability of each class (classifiers only)."
    )
    output: Literal["log-odds"] | None = Field(
        default=None, description="What a classifier's contributions explain (classifiers only)."
    )
    base_value: float | dict[str, float] = Field(
        description="The mean output over the training rows: the value (regressors), or per "
        "explained class its log-odds (classifiers; binary ones explain the second class)."
    )
    contributions: dict[str, float] | dict[str, dict[str, float]] = Field(
        description="Each feature's contribution (per explained class for classifiers); with "
        "base_value they add up to the prediction, or to raw_score."
    )
    raw_score: dict[str, float] | None = Field(
        default=None, description="Per explained class, the log-odds the model computed."
    )


class ExplanationOut(ExplanationItemOut):
    model: str
    registered_name: str
    version: str
    latency_ms: float


class ExplanationBatchOut(_Out):
    model: str
    registered_name: str
    version: str
    count: int
    explanations: list[ExplanationItemOut]
    latency_ms: float


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
    uptime_s: float
    worker_pid: int
    memory_rss_bytes: int
    models: dict[str, ModelStatus]
    database: Reachable
    registry: Reachable


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
    challenger_percent: float


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
    predictor: str | None = None


class VersionGate(_Out):
    decision: str | None
    reason: str | None
    previous_champion: str | None


class VersionSummary(_Out):
    version: str
    aliases: list[str]
    run_id: str | None
    created_at_ms: int
    metrics: dict[str, float]
    candidate: str | None
    gate: VersionGate


class ChampionChange(_Out):
    model: str
    previous_version: str | None
    version: str


class TrafficState(_Out):
    model: str
    champion_version: str | None
    challenger_version: str | None
    challenger_percent: float


class ModelEvent(_Out):
    type: EventType
    at: str = Field(description="when, ISO 8601 UTC")
    version: str | None = Field(description="the version the decision is about")
    reason: str = Field(description="why, as a sentence")
    details: dict[str, Any] = Field(description="the numbers behind the decision")


class ModelEvents(_Out):
    events: list[ModelEvent] = Field(description="newest first")


# -- retraining --------------------------------------------------------------------------
class RetrainJob(_Out):
    id: str
    model: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    candidates: list[str] | None
    data_path: str | None
    version: str | None
    promoted: bool | None
    gate_reason: str | None
    metrics: dict[str, float] | None
    error: str | None
    progress: str | None = None
    log_tail: list[str] | None = None


class RetrainJobs(_Out):
    items: list[RetrainJob]


# -- history, feedback, drift ------------------------------------------------------------
class LoggedPrediction(_Out):
    id: str
    created_at: str
    model: str
    version: str
    features: dict[str, float]
    prediction: float | str
    probabilities: dict[str, float] | None
    latency_ms: float
    request_id: str | None
    status: str
    protocol: str | None
    actual: float | str | None


class HistoryPage(_Out):
    items: list[LoggedPrediction]
    next_cursor: int | None


class LiveQuality(_Out):
    version: str
    window: int
    accuracy: float | None = None
    mae: float | None = None
    rmse: float | None = None


class FeedbackOut(_Out):
    prediction_id: str
    model: str
    version: str
    prediction: float | str
    actual: float | str
    live_quality: LiveQuality


class FeatureDrift(_Out):
    psi: float
    ks_pvalue: float
    drifted: bool
    mean: float
    reference_mean: float


class PredictionDrift(_Out):
    psi: float
    drifted: bool


class DriftReport(_Out):
    model: str
    reference_version: str
    window: int
    window_limit: int
    min_rows: int
    thresholds: dict[str, float]
    status: Literal["ok", "insufficient_data", "no_reference"]
    detail: str | None = None
    drifted_features: list[str] | None = None
    features: dict[str, FeatureDrift] | None = None
    prediction: PredictionDrift | None = None


# -- Open Inference Protocol (V2) ---------------------------------------------------------
class V2Error(_Out):
    error: str


class V2Live(_Out):
    live: bool


class V2Ready(_Out):
    ready: bool


class V2ModelReady(_Out):
    name: str
    ready: bool


class V2ServerMetadata(_Out):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(_Out):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(_Out):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] | None = None


class V2InputTensor(_Out):
    name: str = Field(description="a feature's name, or any name for one [N, F] tensor")
    shape: list[int] = Field(examples=[[1]])
    datatype: str = Field(examples=["FP64"], description="FP16/32/64, INT8..64 or UINT8..64")
    parameters: dict[str, Any] | None = Field(
        default=None, description='{"binary_data_size": n} when the data follows the JSON'
    )
    data: list[Any] | None = Field(default=None, description="values, flat or nested, row-major")


class V2RequestedOutput(_Out):
    name: str = Field(description="predict, predict_proba (classifiers) or prediction_id")
    parameters: dict[str, Any] | None = Field(default=None, examples=[{"binary_data": False}])


class V2InferRequest(_Out):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description='{"binary_data_output": true} for binary outputs'
    )
    inputs: list[V2InputTensor]
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(_Out):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2InferResponse(_Out):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2OutputTensor]


# -- MLflow scoring protocol ------------------------------------------------------------
class MlflowSplit(_Out):
    columns: list[str] | None = None
    index: list[Any] | None = None
    data: list[list[float]]


class MlflowRequest(_Out):
    """Exactly one of the four fields."""

    dataframe_split: MlflowSplit | None = None
    dataframe_records: list[dict[str, float]] | None = None
    instances: list[Any] | dict[str, list[float]] | None = None
    inputs: list[Any] | dict[str, list[float]] | None = None
    params: dict[str, Any] | None = None


class MlflowPredictions(_Out):
    predictions: list[float | str]


class MlflowError(_Out):
    error_code: str
    message: str

"""The typed values the core hands across package boundaries.

Storage returns them, the serving layer makes and reads them, and the HTTP routes answer
with them as they are (they are pydantic models, so each one is also its response schema):
a renamed field is a type error, not a ``KeyError`` at run time.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class Value(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), frozen=True)


# -- model events --------------------------------------------------------------------
EventType = Literal[
    "retrain_triggered", "retrain_succeeded", "retrain_failed", "shadow_started",
    "canary_started", "promoted", "rolled_back", "batch_scored", "batch_failed",
]  # fmt: skip
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class ModelEvent(Value):
    """A decision about a model (retrain triggered, canary started, promoted, ...) and why."""

    type: EventType
    at: str = Field(description="when, ISO 8601 UTC")
    version: str | None = Field(description="the version the decision is about")
    reason: str = Field(description="why, as a sentence")
    details: dict[str, JsonValue] = Field(description="the numbers behind the decision")


# -- retrain jobs ----------------------------------------------------------------------
JobStatus = Literal["queued", "running", "succeeded", "failed"]
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")


class TrainingOutcome(Value):
    """What a training run reports (to its retrain job's row, and ``--json-result``)."""

    model: str
    registered_name: str
    version: str
    promoted: bool
    rollout: bool  # passed the gate; the service's live rollout (shadow, canary) decides
    reason: str
    feedback_rows: int
    chosen: str  # the candidate
    run_id: str
    metrics: dict[str, float]  # test_* and cv_*
    seconds: float


class RetrainJob(Value):
    id: str
    model: str
    status: JobStatus
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

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


# -- what is served --------------------------------------------------------------------
class ChampionChange(Value):
    model: str
    previous_version: str | None
    version: str


class TrafficState(Value):
    model: str
    champion_version: str | None
    challenger_version: str | None
    challenger_percent: float = Field(description="the challenger's share of the answers")
    shadow_percent: float = Field(
        default=0.0, description="the share of requests copied to the challenger as a shadow"
    )


class VersionGate(Value):
    decision: str | None
    reason: str | None
    previous_champion: str | None


class VersionSummary(Value):
    version: str
    aliases: list[str]
    run_id: str | None
    created_at_ms: int
    metrics: dict[str, float]
    candidate: str | None
    gate: VersionGate


# -- the automation's memory -----------------------------------------------------------
AUTOMATION_STATE_VERSION = 1


class CanaryState(BaseModel):
    """A rollout stage being judged (a canary, or a shadow): which version against which
    champion, since when."""

    version: str
    champion: str
    started_at: float  # Unix seconds
    after_seq: int  # the prediction log's last row before it started


class AutomationState(BaseModel):
    """What the automation of one model remembers between checks, stored as JSON. Mutable:
    a check updates it in place and stores it when it changed."""

    schema_version: int = AUTOMATION_STATE_VERSION
    drift_streak: int = 0  # drift checks in a row that found drift
    drift_features: list[str] = Field(default_factory=list)  # what drifted in the latest
    canary: CanaryState | None = None
    shadow: CanaryState | None = None


# -- the training data's statistics, what drift is measured against ---------------------------
class ColumnStats(Value):
    """A column of the training data: summary, deciles as bins, and a sorted sample."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    bin_edges: list[float]  # the inner edges: the outer bins are open
    bin_fractions: list[float]
    sample: list[float]


class ClassFractions(Value):
    class_fractions: dict[str, float]


class ReferenceStats(Value):
    """Written by training beside each version (``reference/reference_stats.json``), read by
    the service to measure drift."""

    rows: int
    features: dict[str, ColumnStats]
    prediction: ColumnStats | ClassFractions  # regressors' values, or classifiers' classes


# -- ground truth, live quality, drift ---------------------------------------------------
class LiveQuality(Value):
    version: str
    window: int
    accuracy: float | None = None
    mae: float | None = None
    rmse: float | None = None

    def metrics(self) -> dict[str, float]:
        """The measured metrics by name (the spec's live-quality bounds name them)."""
        values = {"accuracy": self.accuracy, "mae": self.mae, "rmse": self.rmse}
        return {k: v for k, v in values.items() if v is not None}


Label = float | str  # a regressor's value or a classifier's class


class FeedbackResult(Value):
    prediction_id: str
    model: str
    version: str
    prediction: Label
    actual: Label
    live_quality: LiveQuality


class ShadowAgreement(Value):
    """How a shadow's predictions compare with the champion's on the same inputs, over the
    last hour, labels or not."""

    version: str = Field(description="the shadow's version")
    window_s: int = Field(description="the span of pairs compared, seconds")
    pairs: int
    agreement: float | None = Field(
        default=None, description="share of pairs with the same class (classifiers)"
    )
    mean_abs_difference: float | None = Field(
        default=None, description="mean absolute difference of the values (regressors)"
    )


class FeatureDrift(Value):
    psi: float
    ks_pvalue: float
    drifted: bool
    mean: float
    reference_mean: float


class PredictionDrift(Value):
    psi: float
    drifted: bool


class DriftReport(Value):
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


# -- the prediction log ------------------------------------------------------------------
class LogStatus(Value):
    """Whether the prediction log is being written, as /health reports it."""

    writable: bool = Field(description="false while writes fail (rows are counted as lost)")
    failing_for_s: float | None = Field(description="how long writes have been failing")
    last_error: str | None = Field(description="the database's last error")
    queued_rows: int = Field(description="rows waiting for the writer")
    required: bool = Field(description="predictions are refused while the log fails")


class LoggedPrediction(Value):
    id: str
    created_at: str
    model: str
    version: str
    features: dict[str, float]
    prediction: Label
    probabilities: dict[str, float] | None
    latency_ms: float
    request_id: str | None
    status: str
    protocol: str | None
    actual: Label | None
    arm: str | None = Field(default=None, description='"shadow": a shadow\'s, answered to no one')
    pair_id: str | None = Field(
        default=None,
        description="a shadow's: the answer it pairs with (whose features and request id it "
        "shares; its own are empty)",
    )
    trace_id: str | None = Field(
        default=None, description="the request's OpenTelemetry trace id, when tracing is on"
    )


# -- offline scoring -------------------------------------------------------------------
class BatchSummary(Value):
    """What one offline scoring job did (``prediction-service score``)."""

    model: str
    registered_name: str
    version: str
    batch_id: str = Field(description="the job: the same input, version and options give the same")
    engine: Literal["local", "spark"]
    input: str
    input_digest: str = Field(description="SHA-256 over the input files' names and bytes")
    output: str
    rows: int
    scored: int
    invalid: int
    invalid_by_reason: dict[str, int] = Field(description="the error column's values, counted")
    parts: int = Field(description="output parts")
    resumed_parts: int = Field(description="parts an earlier, interrupted run had written")
    seconds: float
    rows_per_second: float
    peak_rss_mb: float = Field(description="the scoring process's peak resident memory")
    mlflow_run_id: str = ""

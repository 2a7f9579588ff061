"""Model specs: one YAML file per served model, validated into typed objects."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from prediction_service.catalog import ESTIMATORS, Task
from prediction_service.errors import InvalidInputError, SpecError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: Any) -> Any:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of seconds, as a timedelta."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found is None:
            raise ValueError(f"{value!r} is not a duration: write 30d, 12h, 90m, 45s or 2w")
        return timedelta(seconds=float(found[1]) * _UNITS[found[2]])
    return value


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


# A positive duration, written as ``30d`` in YAML and the environment.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    Field(gt=timedelta(0)),
]

# metric name -> (task, True when larger is better)
METRICS: dict[str, tuple[Task, bool]] = {
    "rmse": ("regression", False),
    "mae": ("regression", False),
    "r2": ("regression", True),
    "accuracy": ("classification", True),
    "f1_macro": ("classification", True),
    "log_loss": ("classification", False),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class FeatureSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The request field."""
    column: str | None = None
    """The CSV column, when it differs from name."""
    type: Literal["float", "int"] = "float"
    """Float, or int (whole numbers only)."""
    min: float
    """Smallest valid value; requests below it get 422."""
    max: float
    """Largest valid value; requests above it get 422."""
    description: str = ""
    """What it means (in the API documentation)."""

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @model_validator(mode="after")
    def _range(self) -> FeatureSpec:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min >= self.max:
            raise ValueError(f"needs finite min < max, got min={self.min}, max={self.max}")
        return self


class DerivedFeature(_Strict):
    """A feature the model computes from the request's: a weighted sum of spec features (for
    example coordinates rotated by an angle, so trees cut a diagonal in one split)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The derived column's name."""
    weights: dict[str, float] = Field(min_length=1)
    """Spec feature -> weight; the column is their weighted sum."""
    description: str = ""
    """What it means (documentation)."""


class TargetSpec(_Strict):
    column: str
    """The CSV column to predict."""
    classes: list[str] | None = None
    """Class names, in the order of the CSV's integer codes (classifiers)."""


class DataSpec(_Strict):
    path: Path
    """The CSV, relative to the home folder."""
    min_rows: int = Field(default=10, ge=2)
    """Fewer rows is an error."""


class SplitSpec(_Strict):
    test_size: float = Field(default=0.2, gt=0, lt=1)
    """Share of rows held out for the test."""
    seed: int = 42
    """The split's (and the search's) seed."""
    cv_folds: int = Field(default=5, ge=2, le=20)
    """Cross-validation folds on the training part."""


class SearchDimension(_Strict):
    """One searched parameter: ``choices``, or a range ``low``..``high`` (``log`` scale for
    rates; ``type: int`` for counts)."""

    choices: list[Any] | None = Field(default=None, min_length=1)
    """Values to choose from."""
    low: float | None = None
    """The range's low end."""
    high: float | None = None
    """The range's high end."""
    log: bool = False
    """Search the range on a log scale."""
    type: Literal["float", "int"] = "float"
    """Float, or int for counts."""

    @model_validator(mode="after")
    def _shape(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give choices, or low and high, not both")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("needs choices, or low < high")
        if self.log and self.low <= 0:
            raise ValueError("a log scale needs low > 0")
        return self


class SearchSpec(_Strict):
    """A hyperparameter search over the training split, with the spec's own CV (Optuna's TPE
    sampler, seeded by the split seed): ``trials`` settings are tried, the best is kept."""

    trials: int = Field(ge=1, le=500)
    """Settings tried."""
    space: dict[str, SearchDimension] = Field(min_length=1)
    """Parameter -> its range or choices."""


class CandidateSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    """The candidate's name in reports, runs and --candidates."""
    estimator: str
    """An estimator of the catalog, for the spec's task (ridge, lightgbm_regressor, logistic_regression, k_neighbors_classifier, ...)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Fixed parameters of the estimator."""
    search: SearchSpec | None = None
    """Parameters searched instead of fixed."""

    @model_validator(mode="after")
    def _fixed_or_searched(self) -> CandidateSpec:
        both = sorted(set(self.params) & set(self.search.space if self.search else {}))
        if both:
            raise ValueError(
                f"search.space: {both} also in params; a parameter is fixed or searched"
            )
        return self


class Threshold(_Strict):
    min: float | None = None
    """The metric must be at least this."""
    max: float | None = None
    """The metric must be at most this."""


def failed_thresholds(thresholds: dict[str, Threshold], metrics: dict[str, float]) -> list[str]:
    """Each bound ``metrics`` break, as a sentence; bounds on absent metrics are skipped."""
    failures = []
    for name, bound in thresholds.items():
        if name not in metrics:
            continue
        value = metrics[name]
        if bound.min is not None and value < bound.min:
            failures.append(f"{name} {value:.4f} < required {bound.min}")
        if bound.max is not None and value > bound.max:
            failures.append(f"{name} {value:.4f} > allowed {bound.max}")
    return failures


class GateSpec(_Strict):
    tolerance: float = Field(default=0.0, ge=0)
    """A new version may be this much worse than the champion on the same test rows and still be promoted."""
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    """Metric -> bound the new version's test metrics must meet."""


# What live quality (from feedback) measures, by task.
LIVE_METRICS: dict[str, Task] = {
    "accuracy": "classification",
    "mae": "regression",
    "rmse": "regression",
}


class MonitoringSpec(_Strict):
    # Bounds on live quality; the LiveQualityLow alert reads them from a gauge.
    live_quality: dict[str, Threshold] = Field(default_factory=dict)
    """Metric -> bound on quality over recent feedback."""


class DriftTrigger(_Strict):
    consecutive_checks: int = Field(default=3, ge=1)
    """Drift checks in a row that must find drift."""


class LiveQualityTrigger(_Strict):
    min_labels: int = Field(default=200, ge=1)
    """Labelled predictions needed before live quality can trigger."""


class TriggersSpec(_Strict):
    schedule_s: float | None = Field(default=None, gt=0)
    """Retrain every this many seconds."""
    drift: DriftTrigger | None = None
    """Retrain after drift in consecutive checks."""
    live_quality: LiveQualityTrigger | None = None
    """Retrain when live quality breaks its bound."""
    new_data: bool = False
    """Retrain when the data file's digest changes."""


class TrainingDataSpec(_Strict):
    # Train on the CSV plus the production rows that received ground truth.
    include_feedback: bool = False
    """Train on the CSV plus the production rows that received ground truth."""


class GuardrailsSpec(_Strict):
    """Live limits on the challenger's arm during a canary; breaking one rolls it back."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """The challenger's error rate above which the canary is rolled back."""
    # The challenger's p99 latency may be at most this multiple of the champion's (plus 1 ms:
    # sub-millisecond percentiles are noise).
    max_p99_ratio: float = Field(default=3.0, ge=1)
    """The challenger's p99 latency may be at most this multiple of the champion's (plus 1 ms)."""
    # Requests the challenger must have answered before a guardrail can judge it: a p99 of
    # fewer than 100 is just the slowest one (a left-behind demo tripped on one 6 ms outlier
    # among 27 requests of a model whose mean was 0.3 ms).
    min_requests: int = Field(default=200, ge=1)
    """Requests the challenger must have answered before a guardrail judges it."""


Stage = Literal["shadow", "canary"]


class RolloutSpec(_Strict):
    """How a version that passed the gate takes over: ``direct`` (at once), or through live
    stages: a ``shadow`` (a copy of the requests, answered by the champion, judged on
    labelled pairs), a ``canary`` (a share of the answers, judged on each arm's labels), or
    ``stages: [shadow, canary]`` (a shadow first; one that passes goes on to the canary).
    ``min_labels``, ``max_duration_s`` and ``confidence`` apply to each stage."""

    mode: Literal["direct", "canary", "shadow"] = "direct"
    """Direct (the gate alone), canary, or shadow."""
    stages: list[Stage] | None = Field(default=None, min_length=1, max_length=2)
    """[shadow], [canary] or [shadow, canary], instead of mode."""
    shadow_percent: float = Field(default=100.0, gt=0, le=100)
    """Share of requests copied to the shadow."""
    canary_percent: float = Field(default=10.0, gt=0, lt=100)
    """Share of requests the canary answers."""
    min_labels: int = Field(default=100, ge=2)
    """Labelled predictions (pairs, for a shadow) a stage needs to decide."""
    max_duration_s: float = Field(default=86400.0, gt=0)
    """A stage still undecided after this is rolled back."""
    # Roll back when the challenger is worse with this confidence (one-sided test).
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Roll back when the challenger is worse with this confidence (one-sided test)."""
    guardrails: GuardrailsSpec = GuardrailsSpec()
    """Live limits on the canary's arm."""

    @model_validator(mode="after")
    def _one_way(self) -> RolloutSpec:
        if self.stages is not None:
            if self.mode != "direct":
                raise ValueError("give mode or stages, not both")
            if self.stages not in (["shadow"], ["canary"], ["shadow", "canary"]):
                raise ValueError("stages: [shadow], [canary] or [shadow, canary]")
        return self

    @property
    def sequence(self) -> tuple[Stage, ...]:
        """The live stages a new version goes through, in order (none: direct)."""
        if self.stages is not None:
            return tuple(self.stages)
        return () if self.mode == "direct" else (self.mode,)


class AutomationSpec(_Strict):
    """What the service does on its own: when to retrain, on what, and how a new version
    takes over (``direct``: the gate alone; ``canary``: live feedback decides)."""

    triggers: TriggersSpec = TriggersSpec()
    """What starts a retrain."""
    cooldown_s: float = Field(default=3600.0, ge=0)
    """Seconds after a retrain before a trigger may start another."""
    training_data: TrainingDataSpec = TrainingDataSpec()
    """What a triggered retrain trains on."""
    rollout: RolloutSpec = RolloutSpec()
    """How a version that passed the gate takes over."""


class BatchingSpec(_Strict):
    """Adaptive batching: concurrent requests for one version share one call to the model.
    A request waits at most ``max_latency_ms`` for its batch; a batch goes at once when the
    model is idle or when it holds ``max_batch_size`` rows."""

    max_batch_size: int = Field(default=32, ge=2, le=10_000)
    """Most rows in one model call."""
    max_latency_ms: float = Field(default=5.0, gt=0, le=1000)
    """Longest a request waits for its batch while a call is in the model; then a second call starts."""
    # A version whose one-row predict is cheaper than this is served unbatched: the hop to a
    # worker thread and back (about 60 us here) would cost more than batching saves. 0
    # batches every version.
    min_row_cost_us: float = Field(default=50.0, ge=0)
    """A version whose one-row predict is cheaper than this (measured at load) is served unbatched; 0 batches every version."""


class ServingSpec(_Strict):
    # Off by default: worth it for models whose one-row predict is not cheap (see the docs).
    batching: BatchingSpec | None = None
    """Adaptive batching; off when absent."""
    log_retention: Duration | None = None
    """How long this model's predictions stay in the live table (30d, 12h) before they are archived; overrides PREDICT_LOG_RETENTION."""


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """The URL name: /predict/<name>."""
    registered_name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    """The MLflow registered model."""
    description: str = ""
    """What the model predicts (in the API documentation)."""
    task: Task
    """Regression or classification."""
    data: DataSpec
    """The training CSV."""
    target: TargetSpec
    """The column to predict."""
    features: list[FeatureSpec] = Field(min_length=1)
    """The request's fields, in order, with their valid ranges."""
    derived_features: list[DerivedFeature] = Field(default_factory=list)
    """Columns the model computes from the features."""
    split: SplitSpec = SplitSpec()
    """The test split and cross-validation."""
    selection_metric: str
    """The metric that picks the best candidate (rmse, mae, r2; accuracy, f1_macro, log_loss)."""
    candidates: list[CandidateSpec] = Field(min_length=1)
    """The estimators tried."""
    quality_gate: GateSpec = GateSpec()
    """What a new version must meet to become the champion."""
    monitoring: MonitoringSpec = MonitoringSpec()
    """Bounds on live quality (the LiveQualityLow alert)."""
    automation: AutomationSpec | None = None
    """What the service does on its own (retrain triggers, rollout)."""
    serving: ServingSpec = ServingSpec()
    """How the service serves it (adaptive batching)."""
    source: Path | None = Field(default=None, exclude=True)
    """Set by the loader: the file the spec came from."""
    digest: str = Field(default="", exclude=True)
    """Set by the loader: the file's SHA-256."""

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        _unique("features", [f.name for f in self.features])
        _unique("features and derived_features", self.model_feature_names)
        for i, derived in enumerate(self.derived_features):
            unknown = sorted(set(derived.weights) - set(self.feature_names))
            if unknown:
                raise ValueError(
                    f"derived_features[{i}].weights: {unknown} are not features of this spec"
                )
        _unique("candidates", [c.name for c in self.candidates])
        _check_metric("selection_metric", self.selection_metric, self.task)
        for metric in self.quality_gate.thresholds:
            _check_metric(f"quality_gate.thresholds.{metric}", metric, self.task)
        live = [m for m, task in LIVE_METRICS.items() if task == self.task]
        for metric in self.monitoring.live_quality:
            if metric not in live:
                raise ValueError(
                    f"monitoring.live_quality.{metric}: live quality of a {self.task} model "
                    f"measures {live}"
                )
        for i, cand in enumerate(self.candidates):
            entry = ESTIMATORS.get(cand.estimator)
            if entry is None:
                known = ", ".join(sorted(n for n, e in ESTIMATORS.items() if e.task == self.task))
                raise ValueError(
                    f"candidates[{i}].estimator: unknown estimator {cand.estimator!r}; known: {known}"
                )
            if entry.task != self.task:
                raise ValueError(
                    f"candidates[{i}].estimator: {cand.estimator!r} is for {entry.task}, "
                    f"the spec's task is {self.task}"
                )
        triggers = self.automation.triggers if self.automation else None
        if triggers and triggers.live_quality and not self.monitoring.live_quality:
            raise ValueError(
                "automation.triggers.live_quality: needs a bound in monitoring.live_quality"
            )
        if self.task == "classification" and not self.target.classes:
            raise ValueError("target.classes: a classification spec must list its class names")
        if self.task == "classification" and self.target.classes:
            _unique("target.classes", self.target.classes)
            if len(self.target.classes) < 2:
                raise ValueError("target.classes: needs at least two classes")
        return self

    @cached_property  # read on every prediction: built once
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def model_feature_names(self) -> list[str]:
        """What the estimator sees: the request's features, then the derived ones."""
        return self.feature_names + [d.name for d in self.derived_features]

    def derive_weights(self) -> list[list[float]] | None:
        """(features, derived) weights: the derived columns are ``X @ weights``."""
        if not self.derived_features:
            return None
        return [[d.weights.get(f, 0.0) for d in self.derived_features] for f in self.feature_names]

    @property
    def greater_is_better(self) -> bool:
        return METRICS[self.selection_metric][1]

    def data_file(self, home: Path) -> Path:
        return self.data.path if self.data.path.is_absolute() else home / self.data.path


def _unique(field: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{field}: duplicate names {dupes}")


def _check_metric(field: str, metric: str, task: Task) -> None:
    allowed = [m for m, (t, _) in METRICS.items() if t == task]
    if metric not in allowed:
        raise ValueError(f"{field}: {metric!r} is not a {task} metric; use one of {allowed}")


def select_candidates(spec: ModelSpec, names: tuple[str, ...] | None) -> list[CandidateSpec]:
    if not names:
        return list(spec.candidates)
    known = {c.name: c for c in spec.candidates}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInputError(
            f"unknown candidates for {spec.name}: {', '.join(unknown)}; "
            f"the spec has: {', '.join(known)}"
        )
    return [known[n] for n in dict.fromkeys(names)]


def load_spec(path: Path) -> ModelSpec:
    """Parse and validate one spec file; every error names the file and the field."""
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise SpecError(path, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as exc:
        raise SpecError(path, "", f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(path, "", "must be a YAML mapping of fields")
    raw["source"] = path
    raw["digest"] = hashlib.sha256(raw_bytes).hexdigest()
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise SpecError(path, loc, msg + more) from None


def load_specs(specs_dir: Path) -> dict[str, ModelSpec]:
    """Every ``*.yaml`` spec in a folder, keyed by model name."""
    if not specs_dir.is_dir():
        raise SpecError(specs_dir, "", "spec folder does not exist")
    specs: dict[str, ModelSpec] = {}
    for path in sorted(specs_dir.glob("*.yaml")):
        spec = load_spec(path)
        if spec.name in specs:
            raise SpecError(
                path, "name", f"model name {spec.name!r} is already used by another spec"
            )
        specs[spec.name] = spec
    if not specs:
        raise SpecError(specs_dir, "", "no *.yaml model specs found")
    return specs

"""The estimators a spec may name. Import paths are strings so reading a spec imports no ML code."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class EstimatorEntry:
    task: Task
    import_path: str
    scaled: bool = False  # wrap in a StandardScaler pipeline (distance and linear models)
    seeded: bool = True  # accepts random_state
    defaults: tuple[tuple[str, Any], ...] = ()


ESTIMATORS: dict[str, EstimatorEntry] = {
    "ridge": EstimatorEntry("regression", "sklearn.linear_model:Ridge", scaled=True, seeded=False),
    "random_forest_regressor": EstimatorEntry(
        "regression", "sklearn.ensemble:RandomForestRegressor"
    ),
    "hist_gradient_boosting_regressor": EstimatorEntry(
        "regression", "sklearn.ensemble:HistGradientBoostingRegressor"
    ),
    "lightgbm_regressor": EstimatorEntry(
        "regression", "lightgbm:LGBMRegressor", defaults=(("verbose", -1),)
    ),
    "logistic_regression": EstimatorEntry(
        "classification", "sklearn.linear_model:LogisticRegression", scaled=True
    ),
    "random_forest_classifier": EstimatorEntry(
        "classification", "sklearn.ensemble:RandomForestClassifier"
    ),
    "hist_gradient_boosting_classifier": EstimatorEntry(
        "classification", "sklearn.ensemble:HistGradientBoostingClassifier"
    ),
    "k_neighbors_classifier": EstimatorEntry(
        "classification", "sklearn.neighbors:KNeighborsClassifier", scaled=True, seeded=False
    ),
    "lightgbm_classifier": EstimatorEntry(
        "classification", "lightgbm:LGBMClassifier", defaults=(("verbose", -1),)
    ),
}


def build_estimator(
    name: str, params: dict[str, Any], seed: int, derive: list[list[float]] | None = None
) -> Any:
    """A fresh, unfitted estimator; ``TypeError`` on a parameter the estimator does not take.
    With ``derive`` (a spec's ``derive_weights()``), a pipeline whose first step adds the
    derived features."""
    estimator = _build(name, params, seed)
    if derive is None:
        return estimator
    from sklearn.pipeline import Pipeline

    from prediction_service.training.derive import LinearFeatures

    steps = estimator.steps if isinstance(estimator, Pipeline) else [("model", estimator)]
    return Pipeline([("derive", LinearFeatures(derive)), *steps])


def _build(name: str, params: dict[str, Any], seed: int) -> Any:
    entry = ESTIMATORS[name]
    module_name, cls_name = entry.import_path.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    kwargs: dict[str, Any] = dict(entry.defaults)
    if entry.seeded:
        kwargs["random_state"] = seed
    kwargs.update(params)
    estimator = cls(**kwargs)
    if not entry.scaled:
        return estimator
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("model", estimator)])

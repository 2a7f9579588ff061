"""The estimators a spec may name, and the two tasks. Import paths are strings, so reading a
spec imports no ML code; ``training.build`` turns an entry into an estimator."""

from __future__ import annotations

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

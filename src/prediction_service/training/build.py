"""A fresh estimator for a candidate of a spec (the catalog names them)."""

from __future__ import annotations

import importlib
from typing import Any

from prediction_service.catalog import ESTIMATORS


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

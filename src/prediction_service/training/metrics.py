"""Scores for one set of predictions, by task."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def score(task: str, model: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if task == "regression":
        pred = model.predict(X)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": float(skm.mean_absolute_error(y, pred)),
            "r2": float(skm.r2_score(y, pred)),
        }
    proba = model.predict_proba(X)
    classes = np.asarray(model.classes_)
    pred = classes[np.argmax(proba, axis=1)]
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1_macro": float(skm.f1_score(y, pred, average="macro")),
        "log_loss": float(skm.log_loss(y, proba, labels=classes)),
    }

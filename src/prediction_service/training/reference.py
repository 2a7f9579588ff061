"""Per-feature reference statistics of the training data, for drift detection at serving time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prediction_service.domain import ClassFractions, ColumnStats, ReferenceStats

N_BINS = 10
SAMPLE_SIZE = 2000


def column_stats(values: np.ndarray, rng: np.random.Generator) -> ColumnStats:
    values = np.asarray(values, dtype=float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
    # Outer edges open so serving-time values beyond the training range still land in a bin.
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    sample = (
        values if len(values) <= SAMPLE_SIZE else rng.choice(values, SAMPLE_SIZE, replace=False)
    )
    return ColumnStats(
        count=int(len(values)),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
        bin_edges=[float(e) for e in inner],
        bin_fractions=[float(c) / len(values) for c in counts],
        sample=[float(v) for v in np.sort(sample)],
    )


def reference_stats(
    X: pd.DataFrame, predictions: np.ndarray, task: str, seed: int
) -> ReferenceStats:
    rng = np.random.default_rng(seed)
    features = {name: column_stats(X[name].to_numpy(), rng) for name in X.columns}
    prediction: ColumnStats | ClassFractions
    if task == "regression":
        prediction = column_stats(predictions, rng)
    else:
        labels, counts = np.unique(np.asarray(predictions, dtype=str), return_counts=True)
        prediction = ClassFractions(
            class_fractions={str(lb): float(c) / len(predictions) for lb, c in zip(labels, counts)}
        )
    return ReferenceStats(rows=int(len(X)), features=features, prediction=prediction)

"""The housing model with and without the spec's derived features, side by side.

`python bench/housing_features.py` (and `make bench`, which puts it in its results). Fits the
spec's LightGBM candidate on the spec's own training split twice, without and with the
derived features (the rotated coordinates), and reports the test RMSE and R² of each and
how long each takes to predict 10,000 rows through its portable predictor (the forest
kernel), timed in alternating rounds so that both see the same machine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from prediction_service.data import load_dataset
from prediction_service.predictors.portable import from_bundle, to_bundle
from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.training.catalog import build_estimator
from prediction_service.training.metrics import score

ROUNDS, CALLS, ROWS = 6, 10, 10_000


def measure() -> dict[str, dict[str, float]]:
    settings = Settings()
    spec = load_specs(settings.specs_path)["housing"]
    data = load_dataset(spec, spec.data_file(settings.home))
    X, y = data.X.to_numpy(), data.y.to_numpy()
    train, test = train_test_split(
        np.arange(len(X)), test_size=spec.split.test_size, random_state=spec.split.seed
    )
    test = np.sort(test)
    candidate = next(c for c in spec.candidates if c.estimator == "lightgbm_regressor")
    variants: dict[str, Any] = {}
    out: dict[str, dict[str, float]] = {}
    for name, derive in (("without", None), ("with", spec.derive_weights())):
        model = build_estimator(candidate.estimator, candidate.params, spec.split.seed, derive)
        model.fit(X[train], y[train])
        metrics = score("regression", model, X[test], y[test])
        bundle = to_bundle(model, "regression", X[test[:64]])
        assert bundle is not None, "no portable predictor"
        loaded = from_bundle(bundle)
        assert loaded is not None
        variants[name] = loaded[0]
        out[name] = {"rmse": round(metrics["rmse"], 4), "r2": round(metrics["r2"], 4)}
    rows = X[np.random.default_rng(0).choice(len(X), ROWS, replace=False)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, predict in variants.items():
            predict(rows)
            started = time.perf_counter()
            for _ in range(CALLS):
                predict(rows)
            times[name].append((time.perf_counter() - started) / CALLS * 1000)
    for name, values in times.items():
        out[name]["ms_per_10k_rows"] = round(float(np.median(values)), 1)
    return out


def markdown(r: dict[str, dict[str, float]]) -> str:
    lines = [
        "| housing LightGBM, same trees and depth | test RMSE | test R² | 10,000 rows, portable predictor (ms, median) |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in (
        ("without", "without derived features"),
        ("with", "with the rotated coordinates (shipped)"),
    ):
        m = r[name]
        lines.append(f"| {label} | {m['rmse']} | {m['r2']} | {m['ms_per_10k_rows']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(measure()), end="")

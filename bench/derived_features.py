"""Every model whose spec declares derived features, fitted with and without them.

`python bench/derived_features.py` (and `make bench`, which puts it in its results). For each
such spec, its LightGBM candidates are fitted on the spec's own training split twice, without
and with the derived features, and the table gives their test metrics and how long each
takes to predict 10,000 rows through its portable predictor (the forest kernel), timed in
alternating rounds so that both see the same machine. The trees are the same size either
way, so the difference is the cost of computing the derived columns.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from prediction_service.catalog import ESTIMATORS
from prediction_service.data import load_dataset
from prediction_service.predictors.portable import from_bundle, to_bundle
from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec, load_specs
from prediction_service.training.build import build_estimator
from prediction_service.training.metrics import score

ROUNDS, CALLS, ROWS = 6, 10, 10_000
VARIANTS = ("without", "with")

Result = dict[str, dict[str, dict[str, float]]]  # "model/candidate" -> variant -> numbers


def measure() -> Result:
    settings = Settings()
    out: Result = {}
    for spec in load_specs(settings.specs_path).values():
        if spec.derived_features:
            for cand in spec.candidates:
                if ESTIMATORS[cand.estimator].import_path.startswith("lightgbm:"):
                    out[f"{spec.name}/{cand.name}"] = _compare(spec, settings, cand)
    return out


def _compare(spec: ModelSpec, settings: Settings, cand: Any) -> dict[str, dict[str, float]]:
    data = load_dataset(spec, spec.data_file(settings.home))
    X, y = data.X.to_numpy(), data.y.to_numpy()
    train, test = train_test_split(
        np.arange(len(X)), test_size=spec.split.test_size, random_state=spec.split.seed,
        stratify=y if spec.task == "classification" else None,
    )  # fmt: skip
    test = np.sort(test)
    predictors: dict[str, Any] = {}
    out: dict[str, dict[str, float]] = {}
    for variant, derive in zip(VARIANTS, (None, spec.derive_weights())):
        model = build_estimator(cand.estimator, cand.params, spec.split.seed, derive)
        model.fit(X[train], y[train])
        metrics = score(spec.task, model, X[test], y[test])
        bundle = to_bundle(model, spec.task, X[test[:64]])
        loaded = from_bundle(bundle) if bundle is not None else None
        assert loaded is not None, f"{spec.name}/{cand.name}: no portable predictor"
        predictors[variant] = loaded[0]
        out[variant] = {k: round(v, 4) for k, v in metrics.items()}
    rows = X[np.random.default_rng(0).choice(len(X), min(ROWS, len(X)), replace=False)]
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(ROUNDS):
        for variant, predict in predictors.items():
            predict(rows)
            started = time.perf_counter()
            for _ in range(CALLS):
                predict(rows)
            times[variant].append((time.perf_counter() - started) / CALLS * 1000)
    for variant, values in times.items():
        out[variant]["ms_per_10k_rows"] = round(float(np.median(values)), 1)
    return out


def markdown(r: Result) -> str:
    lines = [
        "| model/candidate (same trees) | derived features | test metrics | 10,000 rows, portable predictor (ms, median) |",
        "| --- | --- | --- | --- |",
    ]
    for name, variants in r.items():
        for variant in VARIANTS:
            m = dict(variants[variant])
            ms = m.pop("ms_per_10k_rows")
            metrics = ", ".join(f"{k} {v}" for k, v in sorted(m.items()))
            lines.append(f"| {name} | {variant} | {metrics} | {ms} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(measure()), end="")

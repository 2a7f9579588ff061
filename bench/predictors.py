"""One-row prediction cost of the champions three ways, and of a thread-pool hop.

`python bench/predictors.py` (default registry: `make train` first). Compares
`mlflow.pyfunc` on a DataFrame, the native estimator, and the served predictor; and what
`run_in_threadpool` alone costs, which is why single rows are predicted inline.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from starlette.concurrency import run_in_threadpool

from prediction_service.predictors.portable import estimator_predict, make_predictor
from prediction_service.registry import Registry
from prediction_service.settings import Settings
from prediction_service.specs import load_specs


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


async def hop_us(n: int = 2000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await run_in_threadpool(lambda: None)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    warnings.filterwarnings("ignore")
    settings = Settings()
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    for spec in load_specs(settings.specs_path).values():
        version = registry.champion_version(spec.registered_name)
        if version is None:
            print(f"{spec.name}: no champion; run make train")
            continue
        row = [(f.min + f.max) / 2 for f in spec.features]
        frame = pd.DataFrame([row], columns=spec.feature_names)
        X = np.array([row])
        pyfunc = mlflow.pyfunc.load_model(f"models:/{spec.registered_name}/{version}")
        native = registry.load_model(spec.registered_name, version)
        served, kind = make_predictor(native, spec.task, X)
        estimator = estimator_predict(native, spec.task)
        print(
            f"{spec.name} v{version}: pyfunc {per_call_us(lambda: pyfunc.predict(frame), 300):,.0f} us"
            f" | native estimator {per_call_us(lambda: estimator(X), 300):,.0f} us"
            f" | served ({kind}) {per_call_us(lambda: served(X), 2000):,.1f} us"
        )
    print(f"run_in_threadpool hop: {asyncio.run(hop_us()):,.1f} us")


if __name__ == "__main__":
    main()

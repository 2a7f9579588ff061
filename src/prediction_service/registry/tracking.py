"""Recording one run in MLflow: a training (nested candidate runs, model, registration) or
an offline scoring job."""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature

from prediction_service.registry.store import Registry

_PINNED = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "lightgbm", "skops")


def _pip_requirements() -> list[str]:
    # Pinned from this environment: letting MLflow infer them re-loads the model in a
    # subprocess and costs seconds per training.
    reqs = []
    for dist in _PINNED:
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


class RunRecorder:
    """Use as a context manager around one training of one model, or one scoring job."""

    def __init__(self, registry: Registry, experiment: str, run_name: str) -> None:
        self.registry = registry
        self.experiment = experiment
        self.run_name = run_name
        self.run_id = ""
        self.experiment_id = ""

    def __enter__(self) -> RunRecorder:
        exp = mlflow.get_experiment_by_name(self.experiment)
        if exp is None:
            exp_id = mlflow.create_experiment(
                self.experiment, artifact_location=self.registry.artifact_location(self.experiment)
            )
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        run = mlflow.start_run(experiment_id=exp_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mlflow.end_run(status="FAILED" if exc_type else "FINISHED")

    def log_candidate(self, name: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        # A nested run does not inherit its parent's experiment: name it.
        with mlflow.start_run(run_name=name, nested=True, experiment_id=self.experiment_id):
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            mlflow.log_metrics(metrics)

    def log_params(self, params: dict[str, Any]) -> None:
        mlflow.log_params({k: _param(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics)

    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    def log_dataset(self, frame: pd.DataFrame, source: Path, name: str, target: str) -> str:
        dataset = from_pandas(frame, source=str(source), name=name, targets=target)
        mlflow.log_input(dataset, context="training")
        return str(dataset.digest)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        mlflow.log_dict(obj, artifact_file)

    def log_arrays(self, arrays: dict[str, np.ndarray], artifact_file: str) -> None:
        """Numeric and string arrays as one ``.npz`` (no pickled objects in it)."""
        path = Path(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path.name
            with local.open("wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            mlflow.log_artifact(str(local), artifact_path=str(path.parent))

    def log_files(self, files: dict[str, bytes], folder: str) -> None:
        """Files (name -> content) into one artifact folder of the run."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                (Path(tmp) / Path(name).name).write_bytes(content)
            mlflow.log_artifacts(tmp, artifact_path=folder)

    def log_model(self, model: Any, example: pd.DataFrame) -> str:
        """A bare LightGBM model in MLflow's lightgbm flavour, anything else (pipelines with a
        scaler or derived features included) in the sklearn flavour."""
        signature = infer_signature(example, _predict(model, example))
        common: dict[str, Any] = {
            "name": "model",
            "signature": signature,
            "input_example": example,
            "pip_requirements": _pip_requirements(),
        }
        if hasattr(model, "booster_"):
            info = mlflow.lightgbm.log_model(model, **common)
        else:
            info = mlflow.sklearn.log_model(model, skops_trusted_types=_own_types(model), **common)
        return str(info.model_uri)

    def register(self, model_uri: str, registered_name: str) -> str:
        mv = mlflow.register_model(model_uri, registered_name)
        return str(mv.version)


def _predict(model: Any, example: pd.DataFrame) -> Any:
    return model.predict(example.to_numpy())


def _own_types(model: Any) -> list[str]:
    """The types skops will not load unless told: we built this model ourselves, so trust them."""
    import skops.io

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.skops"
        skops.io.dump(model, path)
        return list(skops.io.get_untrusted_types(file=path))


def _param(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value

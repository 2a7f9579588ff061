"""Shared fixtures: real data, a real MLflow store in a temporary folder, trained once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec, load_specs
from prediction_service.training.pipeline import TrainingResult, run_training

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_program(name: str) -> str:
    """Path of a system program; skip when it is missing locally, fail in CI where it must exist."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install it; .ci/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def make_settings(workdir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": ROOT,
        "tracking_uri": f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
        "artifact_root": workdir / "mlruns" / "artifacts",
        "database_url": f"sqlite:///{workdir / 'predictions.db'}",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def specs() -> dict[str, ModelSpec]:
    return load_specs(ROOT / "config" / "models")


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, specs: dict[str, ModelSpec]
) -> Iterator[tuple[Settings, dict[str, TrainingResult]]]:
    """Both shipped models trained for real, with their full candidate lists, into one store."""
    workdir = tmp_path_factory.mktemp("registry")
    settings = make_settings(workdir)
    results = {
        name: run_training(spec, settings, progress=lambda _m: None) for name, spec in specs.items()
    }
    yield settings, results

"""Shared fixtures: real data, a real MLflow store in a temporary folder, trained once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec, load_specs
from prediction_service.training.pipeline import TrainingResult, run_training

if TYPE_CHECKING:
    from prediction_service.core import Core
    from tests.live import LiveServer

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
TIERS = ("unit", "integration", "live")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is in exactly one tier (pyproject.toml says what each means): `make
    test-unit` runs the first, `make test` all three."""
    wrong = []
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {sorted(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError("tests need exactly one of " + ", ".join(TIERS) + ":\n"
                                + "\n".join(wrong))  # fmt: skip


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


# One small, quick candidate per task: a LightGBM forest for regressors, a scaled linear
# model for classifiers, so the small models exercise both portable predictor kinds.
SMALL_CANDIDATES = {
    "regression": {
        "name": "lightgbm",
        "estimator": "lightgbm_regressor",
        "params": {"n_estimators": 40, "num_leaves": 15, "max_depth": 5, "n_jobs": 1},
    },
    "classification": {
        "name": "logistic_regression",
        "estimator": "logistic_regression",
        "params": {"max_iter": 500},
    },
}


def write_small_specs(folder: Path, source: Path = ROOT / "config" / "models") -> Path:
    """Every spec in ``source`` with one small, quick candidate (by its task) and no gate
    thresholds: models that train in a second or two."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        raw["candidates"] = [SMALL_CANDIDATES[raw["task"]]]
        raw.setdefault("split", {})["cv_folds"] = 2
        raw["quality_gate"] = {"tolerance": 0.0}
        data = Path(raw["data"]["path"])
        raw["data"]["path"] = str(data if data.is_absolute() else ROOT / data)
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="session")
def small(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Settings, dict[str, TrainingResult]]:
    """Small models of both specs, trained once into their own store: the fast inner loop."""
    workdir = tmp_path_factory.mktemp("small")
    settings = make_settings(workdir, specs_dir=write_small_specs(workdir / "specs"))
    results = {
        name: run_training(spec, settings, progress=lambda _m: None)
        for name, spec in load_specs(settings.specs_path).items()
    }
    return settings, results


def small_settings(
    small: tuple[Settings, dict[str, TrainingResult]], workdir: Path, **overrides: object
) -> Settings:
    """Settings over the small models' store with a prediction log of its own."""
    settings, _ = small
    values: dict[str, object] = {
        "tracking_uri": settings.effective_tracking_uri,
        "artifact_root": settings.artifact_path,
        "specs_dir": settings.specs_path,
        "logs_dir": workdir / "logs",
    }
    values.update(overrides)
    return make_settings(workdir, **values)


@pytest.fixture
def core(small: tuple[Settings, dict[str, TrainingResult]], tmp_path: Path) -> Iterator[Core]:
    """The core over the small models, with a prediction log of its own; no HTTP."""
    from prediction_service.core import build_core

    built = build_core(small_settings(small, tmp_path, reload_interval_s=3600))
    built.start()
    yield built
    built.close()


def registry_copy(store: tuple[Settings, dict[str, TrainingResult]], workdir: Path) -> str:
    """A tracking URI over a copy of a session registry (``small`` or ``trained``), for a
    test that moves aliases (retrain, promote, rollback) which the session's other tests
    must not see. The artifacts stay where they are, shared: the copy's runs point at them."""
    source = Path(store[0].effective_tracking_uri.removeprefix("sqlite:///"))
    target = workdir / "registry-copy" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return f"sqlite:///{target}"


HOUSING_RECORD = {
    "MedInc": 8.3252,
    "HouseAge": 41.0,
    "AveRooms": 6.984127,
    "AveBedrms": 1.02381,
    "Population": 322.0,
    "AveOccup": 2.555556,
    "Latitude": 37.88,
    "Longitude": -122.23,
}
IRIS_RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="session")
def live(
    trained: tuple[Settings, dict[str, TrainingResult]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One real uvicorn process serving the session's trained models."""
    from tests.live import LiveServer

    settings, _ = trained
    server = LiveServer(settings, tmp_path_factory.mktemp("live") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[], str]]:
    """A maker of fresh databases on the machine's PostgreSQL (Debian cluster, started if
    down); every database it made is dropped at the end of the session."""
    import secrets
    import subprocess

    lsclusters = require_program("pg_lsclusters")
    require_program("pg_ctlcluster")
    clusters = subprocess.run([lsclusters, "-h"], capture_output=True, text=True, check=True)
    if not clusters.stdout.strip():
        pytest.fail("no PostgreSQL cluster: apt-get install postgresql creates one")
    version, name, port, status = clusters.stdout.split()[:4]
    if status != "online":
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, timeout=60)

    def psql(sql: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-p", port, "-v", "ON_ERROR_STOP=1", "-qc", sql],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'predict_test') THEN "
        "CREATE ROLE predict_test LOGIN PASSWORD 'predict_test'; END IF; END $$;"
    )
    made: list[str] = []

    def fresh() -> str:
        database = f"predict_test_{secrets.token_hex(4)}"
        psql(f"CREATE DATABASE {database} OWNER predict_test")
        made.append(database)
        return f"postgresql+psycopg://predict_test:predict_test@127.0.0.1:{port}/{database}"

    yield fresh
    for database in made:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_url(postgres: Callable[[], str]) -> str:
    """One database shared by the session's tests (each cleans up what it counts)."""
    return postgres()


@pytest.fixture
def fresh_postgres_url(postgres: Callable[[], str]) -> str:
    """A database of this test's own, empty: no schema yet."""
    return postgres()

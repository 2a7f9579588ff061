"""The training pipeline against the real data and a real (temporary) MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from prediction_service.commands.train import EXIT_NOT_PROMOTED, main
from prediction_service.metrics import Metrics
from prediction_service.registry import Registry
from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.storage.db import make_engine
from prediction_service.storage.events import EventStore
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

Trained = tuple[Settings, dict[str, TrainingResult]]


def test_shipped_models_meet_their_targets(trained: Trained) -> None:
    _, results = trained
    housing, iris = results["housing"], results["iris"]
    assert housing.promoted and iris.promoted
    assert housing.version == iris.version == "1"
    # The targets of the model-quality work, which the spec's gate now also demands.
    assert housing.test_metrics["rmse"] <= 0.42 and housing.test_metrics["r2"] >= 0.865
    assert housing.chosen == "lightgbm"
    assert iris.test_metrics["accuracy"] >= 0.93
    assert iris.cv_metrics["cv_accuracy_mean"] >= 0.95
    assert [c.name for c in housing.candidates] == [
        "ridge", "random_forest", "hist_gradient_boosting", "lightgbm",
    ]  # fmt: skip
    assert sum(c.chosen for c in housing.candidates) == 1


def test_champion_loads_back_by_alias_and_classifies_setosa(trained: Trained) -> None:
    settings, _ = trained
    mlflow.set_tracking_uri(settings.effective_tracking_uri)
    mlflow.set_registry_uri(settings.effective_tracking_uri)
    model = mlflow.sklearn.load_model("models:/IrisBestModel@champion")
    proba = model.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2]]))[0]
    assert model.classes_[int(np.argmax(proba))] == "setosa"
    assert proba.max() > 0.9


def test_runs_record_candidates_dataset_reference_and_tags(trained: Trained) -> None:
    settings, results = trained
    uri = settings.effective_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, result in results.items():
        run = client.get_run(result.run_id)
        tags = run.data.tags
        assert len(tags["data_digest"]) == 64 and len(tags["spec_digest"]) == 64
        assert tags["git_commit"] and tags["test_split_digest"]
        children = client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
        )
        assert sorted(c.info.run_name for c in children) == sorted(
            c.name for c in result.candidates
        )
        assert all(any(k.startswith("cv_") for k in c.data.metrics) for c in children)
        assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest
        registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
        ref = registry.load_run_json(result.run_id, "reference/reference_stats.json")
        spec_features = load_specs(ROOT / "config" / "models")[name].feature_names
        assert list(ref["features"]) == spec_features
        first = ref["features"][spec_features[0]]
        assert abs(sum(first["bin_fractions"]) - 1) < 1e-9
        version = client.get_model_version(result.registered_name, result.version)
        assert version.tags["gate_decision"] == "promoted"
        assert "champion" in version.aliases


# -- the quality gate, with a spec of our own ------------------------------------------------


def _iris_variant(tmp_path: Path, extra_candidates: list[dict], thresholds: dict) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "models" / "iris.yaml").read_text())
    raw["registered_name"] = "IrisGateTest"
    raw["candidates"] = raw["candidates"][:1] + extra_candidates
    raw["quality_gate"] = {"tolerance": 0.0, "thresholds": thresholds}
    raw["data"]["path"] = str(ROOT / "data" / "iris_raw.csv")
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / "iris.yaml").write_text(yaml.safe_dump(raw))
    return specs_dir


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREDICT_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PREDICT_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PREDICT_DATABASE_URL", f"sqlite:///{tmp_path / 'predictions.db'}")
    return tmp_path


def test_worse_candidate_does_not_take_the_champion_alias(isolated: Path) -> None:
    weak = {"name": "weak", "estimator": "logistic_regression", "params": {"C": 0.0005}}
    specs_dir = _iris_variant(isolated, [weak], {})
    argv = ["--specs-dir", str(specs_dir), "--cv-folds", "2"]
    assert main(argv + ["--candidates", "logistic_regression"], model="iris") == 0
    assert main(argv + ["--candidates", "weak"], model="iris") == EXIT_NOT_PROMOTED

    registry = Registry(f"sqlite:///{isolated / 'mlflow.db'}", isolated / "artifacts")
    assert registry.champion_version("IrisGateTest") == "1"
    assert registry.alias_version("IrisGateTest", "challenger") == "2"
    rejected = registry.version_info("IrisGateTest", "2")
    assert rejected.tags["gate_decision"] == "rejected"
    assert "worse than the champion" in rejected.tags["gate_reason"]
    assert rejected.tags["compared_with_version"] == "1"
    # Both runs are on the model's event log, as the service's own jobs are.
    engine = make_engine(f"sqlite:///{isolated / 'predictions.db'}")
    events = EventStore(engine, Metrics()).list("iris")
    engine.dispose()
    assert [(e.type, e.version) for e in events] == [
        ("retrain_succeeded", "2"), ("promoted", "1"), ("retrain_succeeded", "1")
    ]  # fmt: skip
    assert "not champion" in events[0].reason and events[1].details["source"] == "train command"


def test_threshold_blocks_even_the_first_version(isolated: Path) -> None:
    specs_dir = _iris_variant(isolated, [], {"accuracy": {"min": 0.999}})
    code = main(["--specs-dir", str(specs_dir), "--cv-folds", "2"], model="iris")
    assert code == EXIT_NOT_PROMOTED
    registry = Registry(f"sqlite:///{isolated / 'mlflow.db'}", isolated / "artifacts")
    assert registry.champion_version("IrisGateTest") is None
    assert "thresholds" in registry.version_info("IrisGateTest", "1").tags["gate_reason"]


def test_same_seed_gives_same_metrics_and_records_previous_champion(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs_dir = _iris_variant(isolated, [], {})
    argv = ["--specs-dir", str(specs_dir), "--seed", "7"]
    assert main(argv, model="iris") == 0
    first = capsys.readouterr().out
    assert main(argv, model="iris") == 0  # equal is "at least as good": promoted
    second = capsys.readouterr().out
    metrics = [line for line in first.splitlines() if line.startswith("test metrics")]
    assert metrics and metrics == [
        line for line in second.splitlines() if line.startswith("test metrics")
    ]
    registry = Registry(f"sqlite:///{isolated / 'mlflow.db'}", isolated / "artifacts")
    assert registry.champion_version("IrisGateTest") == "2"
    assert registry.version_info("IrisGateTest", "2").tags["previous_champion"] == "1"


def test_a_third_model_needs_only_a_yaml_file_and_a_csv(isolated: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"width": rng.uniform(0, 10, 300), "depth": rng.uniform(1, 5, 300)})
    frame["price"] = 3 * frame.width + 2 * frame.depth + rng.normal(0, 0.1, 300)
    frame.to_csv(isolated / "boxes.csv", index=False)
    spec = {
        "name": "boxes",
        "registered_name": "BoxPriceModel",
        "task": "regression",
        "data": {"path": str(isolated / "boxes.csv"), "min_rows": 100},
        "target": {"column": "price"},
        "features": [
            {"name": "width", "min": 0, "max": 10},
            {"name": "depth", "min": 1, "max": 5},
        ],
        "selection_metric": "rmse",
        "candidates": [
            {"name": "linear", "estimator": "ridge", "params": {"alpha": 0.01}},
            {
                "name": "forest",
                "estimator": "random_forest_regressor",
                "params": {"n_estimators": 20},
            },
        ],
        "quality_gate": {"thresholds": {"r2": {"min": 0.99}}},
    }
    specs_dir = isolated / "specs"
    specs_dir.mkdir()
    (specs_dir / "boxes.yaml").write_text(yaml.safe_dump(spec))
    assert main(["boxes", "--specs-dir", str(specs_dir)]) == 0
    registry = Registry(f"sqlite:///{isolated / 'mlflow.db'}", isolated / "artifacts")
    info = registry.version_info("BoxPriceModel", registry.champion_version("BoxPriceModel") or "")
    assert info.params["candidate"] == "linear"
    assert info.metrics["test_rmse"] < 0.2


def test_bad_data_stops_training_with_a_clear_message(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.read_csv(ROOT / "data" / "iris_raw.csv")
    frame.loc[:4, "sepal width (cm)"] = -3.0
    frame.to_csv(isolated / "bad.csv", index=False)
    assert main(["--data", str(isolated / "bad.csv")], model="iris") == 1
    err = capsys.readouterr().err
    assert "column 'sepal width (cm)': 5 rows outside the valid range" in err
    assert (
        not (isolated / "mlflow.db").exists()
        or Registry(f"sqlite:///{isolated / 'mlflow.db'}", isolated / "artifacts").champion_version(
            "IrisBestModel"
        )
        is None
    )


def test_unknown_candidate_is_an_error(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--candidates", "deep_forest"], model="iris") == 1
    assert "unknown candidates for iris: deep_forest" in capsys.readouterr().err


@pytest.mark.parametrize(
    "cmd",
    [
        ["train_housing.py", "--help"],
        ["train_iris.py", "--help"],
        ["-m", "prediction_service.training", "--help"],
    ],
)
def test_every_trainer_has_help(cmd: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "--tracking-uri" in out and "--candidates" in out and "--seed" in out


def test_reference_split_is_recorded(trained: Trained) -> None:
    settings, results = trained
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    split = registry.load_run_json(results["iris"].run_id, "reference/test_split.json")
    assert len(split["test_row_ids"]) == 30 and split["seed"] == 42
    assert json.dumps(split["test_row_ids"]) == json.dumps(sorted(split["test_row_ids"]))

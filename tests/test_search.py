"""Hyperparameter search as a spec feature: validated like the rest of the spec, run on the
training split with the spec's own CV, trial by trial, seeded, and recorded in the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from prediction_service.errors import SpecError
from prediction_service.registry import Registry
from prediction_service.specs import load_spec
from prediction_service.training.pipeline import run_training
from tests.conftest import ROOT, make_settings

pytestmark = pytest.mark.unit

SEARCHED = {
    "name": "tuned_lr",
    "estimator": "logistic_regression",
    "params": {"max_iter": 500},
    "search": {"trials": 4, "space": {"C": {"low": 0.01, "high": 100.0, "log": True}}},
}


def iris_spec(folder: Path, candidate: dict[str, Any]) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "models" / "iris.yaml").read_text())
    raw["candidates"] = [candidate]
    raw["split"]["cv_folds"] = 3
    raw["quality_gate"] = {"tolerance": 0.0}
    raw["data"]["path"] = str(ROOT / raw["data"]["path"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "iris.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("search", "words"),
    [
        ({"trials": 3, "space": {"max_iter": {"low": 1, "high": 9}}}, "['max_iter'] also in params"),
        ({"trials": 3, "space": {"C": {"low": 0.0, "high": 1.0, "log": True}}}, "log scale needs low > 0"),
        ({"trials": 3, "space": {"C": {"low": 2.0, "high": 1.0}}}, "needs choices, or low < high"),
        ({"trials": 0, "space": {"C": {"choices": [1.0]}}}, "trials"),
    ],
)  # fmt: skip
def test_a_bad_search_is_refused_naming_the_field(
    tmp_path: Path, search: dict[str, Any], words: str
) -> None:
    path = iris_spec(tmp_path, {**SEARCHED, "search": search})
    with pytest.raises(SpecError, match="candidates") as info:
        load_spec(path)
    assert words in str(info.value)


def train(workdir: Path) -> tuple[Any, list[str]]:
    settings = make_settings(workdir, specs_dir=workdir / "specs")
    spec = load_spec(iris_spec(workdir / "specs", SEARCHED))
    lines: list[str] = []
    return run_training(spec, settings, progress=lines.append), lines


def test_a_search_runs_trial_by_trial_and_keeps_the_best(tmp_path: Path) -> None:
    result, lines = train(tmp_path / "a")
    trial_lines = [ln for ln in lines if " trial " in ln]
    print("\n".join(trial_lines))
    assert [ln.split(" trial ")[1].split(":")[0] for ln in trial_lines] == [
        "1/4",
        "2/4",
        "3/4",
        "4/4",
    ]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a' / 'mlruns' / 'mlflow.db'}")
    record = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/search/tuned_lr.json")
    trials = record["trials"]
    assert len(trials) == 4
    best = next(t for t in trials if t["number"] == record["best"])
    assert best["cv_mean"] == max(t["cv_mean"] for t in trials)  # accuracy: larger is better
    (candidate,) = result.candidates
    assert candidate.cv_mean == pytest.approx(best["cv_mean"])  # the best trial's own CV
    run = mlflow.get_run(result.run_id)
    assert float(run.data.params["C"]) == pytest.approx(best["params"]["C"])
    assert run.data.params["max_iter"] == "500"
    registry = Registry(f"sqlite:///{tmp_path / 'a' / 'mlruns' / 'mlflow.db'}", tmp_path / "a")
    assert registry.champion_version("IrisBestModel") == result.version

    again, _ = train(tmp_path / "b")  # seeded: the same trials in the same order
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'b' / 'mlruns' / 'mlflow.db'}")
    replay = mlflow.artifacts.load_dict(f"runs:/{again.run_id}/search/tuned_lr.json")["trials"]
    assert [t["params"]["C"] for t in replay] == [t["params"]["C"] for t in trials]

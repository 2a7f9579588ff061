"""Shadow rollouts on a live server with two workers, time compressed by settings: a schedule
trigger retrains, the new version predicts a copy of live traffic that the champion
answers, and the paired test on labelled pairs promotes it (iris) or rolls it back (housing,
retrained on targets a unit too high) without anyone touching it. The clients here only predict and
send ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import ROOT
from tests.live import LiveServer
from tests.test_automation_live import automated_server
from tests.test_automation_live import drive as drive_with
from tests.test_automation_live import timeline, wait_served

pytestmark = pytest.mark.live

Small = tuple[Settings, dict[str, TrainingResult]]
SHADOW = {"mode": "shadow", "min_labels": 30, "max_duration_s": 900}


@pytest.fixture(scope="module")
def server(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("shadow")
    # housing's next version learns from mislabelled targets (a unit too high): worse on the
    # truth, which the gate cannot see (it scores both versions on the same wrong rows).
    frame = pd.read_csv(ROOT / "data" / "housing_raw.csv")
    frame["MedHouseVal"] += 1.0
    frame.to_csv(workdir / "housing_mislabelled.csv", index=False)
    blocks = {
        "iris": {"triggers": {"schedule_s": 2}, "cooldown_s": 3600,
                 "training_data": {"include_feedback": True}, "rollout": SHADOW},
        "housing": {"triggers": {"schedule_s": 2}, "cooldown_s": 3600, "rollout": SHADOW},
    }  # fmt: skip

    def mislabelled(name: str, raw: dict[str, Any]) -> None:
        if name == "housing":
            raw["data"]["path"] = str(workdir / "housing_mislabelled.csv")

    live = automated_server(small, workdir, blocks, 0.5, [], mislabelled)
    yield live
    live.stop()


def drive(server: LiveServer, model: str, until: set[str]) -> Any:
    """Predict and send the true value until one of ``until`` appears; every answer is the
    champion's. Returns the events and the versions that answered."""
    return drive_with(server, model, lambda _prediction, _version, truth: truth, until)


def test_a_scheduled_retrain_is_shadowed_and_promoted_on_labelled_pairs(
    server: LiveServer,
) -> None:
    before = server.get("/models/iris").json()["version"]
    seen, answered = drive(server, "iris", {"promoted", "rolled_back"})
    print(f"\niris timeline (oldest first):\n{timeline(server, 'iris')}")
    assert [e["type"] for e in seen] == [
        "retrain_triggered", "retrain_succeeded", "shadow_started", "promoted",
    ]  # fmt: skip
    _, succeeded, shadow, promoted = seen
    new = succeeded["version"]
    assert new != before and shadow["version"] == new == promoted["version"]
    assert "challenger of a shadow rollout" in succeeded["reason"]
    assert "predicts a copy of 100% of requests, answered by the champion" in shadow["reason"]
    test = promoted["details"]["test"]
    assert test["test"] == "McNemar's exact test on discordant pairs, one-sided"
    assert test["n_challenger"] >= 30 and "discordant_worse" in test
    assert "not worse at 95% confidence" in promoted["reason"]
    # The shadow answered no one while it was judged; now it serves everywhere.
    assert set(answered[: answered.index(new)] if new in answered else answered) == {before}
    wait_served(server, "iris", new)


def test_a_worse_shadow_is_rolled_back_and_never_answered_anyone(server: LiveServer) -> None:
    champion = server.get("/models/housing").json()["version"]
    seen, answered = drive(server, "housing", {"promoted", "rolled_back"})
    print(f"\nhousing timeline (oldest first):\n{timeline(server, 'housing')}")
    assert [e["type"] for e in seen] == [
        "retrain_triggered", "retrain_succeeded", "shadow_started", "rolled_back",
    ]  # fmt: skip
    rolled_back = seen[-1]
    assert rolled_back["version"] != champion
    assert set(answered) == {champion}  # the shadow answered no one
    test = rolled_back["details"]["test"]
    assert test["test"] == "paired t-test on absolute errors, one-sided"
    assert test["mean_difference"] > 0 and test["p_value"] < 0.05
    assert "worse at 95% confidence" in rolled_back["reason"]
    assert "not worse" not in rolled_back["reason"]
    # Every worker stops copying within its traffic interval (each request may reach either).
    wait_served(server, "housing", champion)
    assert server.metric("shadow_predictions_total", model="housing") >= 30
    assert server.metric("shadow_dropped_total", model="housing") == 0

"""The MLOps loop on a live server with two workers, time compressed by settings: a schedule
trigger retrains, the new version is canaried on live traffic with feedback, and the service
promotes it (iris) or rolls it back (housing, whose feedback favours the champion) without
anyone touching it. The clients here only predict and send ground truth."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from prediction_service.data import load_dataset
from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import ROOT, make_settings, registry_copy, write_small_specs
from tests.live import LiveServer

pytestmark = pytest.mark.live

TOKEN = "test-admin-token-automation-5e1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READER = "test-reader-key-automation-77c2"
Small = tuple[Settings, dict[str, TrainingResult]]
CANARY = {"mode": "canary", "canary_percent": 50, "min_labels": 30, "max_duration_s": 900}
AUTOMATION = {
    # Trains at the first check: the champion is older than 2 s. The cooldown then keeps
    # each scenario to one retrain.
    "iris": {
        "triggers": {"schedule_s": 2},
        "cooldown_s": 3600,
        "training_data": {"include_feedback": True},
        "rollout": CANARY,
    },
    "housing": {"triggers": {"schedule_s": 2}, "cooldown_s": 3600, "rollout": CANARY},
}
# Each model's dataset as the spec reads it: features by request name, classes by name.
DATA = {
    name: load_dataset(spec, spec.data_file(ROOT))
    for name, spec in load_specs(ROOT / "config" / "models").items()
}


def automated_server(
    small: Small,
    workdir: Path,
    blocks: dict[str, dict[str, Any]],
    tolerance: float,
    keys: list[dict[str, Any]],
    edit: Callable[[str, dict[str, Any]], None] = lambda name, raw: None,
) -> LiveServer:
    """Two workers over a copy of the small store, each spec with its ``automation`` block,
    a gate ``tolerance`` and ``edit`` applied; the automation's clock compressed."""
    specs = write_small_specs(workdir / "specs")
    for name, block in blocks.items():
        path = specs / f"{name}.yaml"
        raw = yaml.safe_load(path.read_text())
        raw["automation"] = block
        raw["quality_gate"] = {"tolerance": tolerance}
        edit(name, raw)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = make_settings(
        workdir,
        specs_dir=specs,
        tracking_uri=registry_copy(small, workdir),
        artifact_root=small[0].artifact_path,
    )
    env = {
        "PREDICT_ADMIN_TOKEN": TOKEN,
        "PREDICT_API_KEYS": json.dumps(keys),
        "PREDICT_LOGS_DIR": str(workdir / "logs"),
        "PREDICT_RELOAD_INTERVAL_S": "1",
        "PREDICT_AUTOMATION_INTERVAL_S": "0.5",
        "PREDICT_AUTOMATION_LEASE_S": "5",
    }
    return LiveServer(settings, workdir / "server.log", workers=2, **env).start()


@pytest.fixture(scope="module")
def server(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Feedback rows join iris's training split: allow the test score to move a little. A
    # read-only key closes the read scope; predictions and feedback stay open.
    live = automated_server(
        small, tmp_path_factory.mktemp("automation"), AUTOMATION, 0.1,
        [{"name": "reader", "key": READER, "scopes": ["read"]}],
    )  # fmt: skip
    yield live
    live.stop()


def events(server: LiveServer, model: str) -> list[dict[str, Any]]:
    """Oldest first."""
    r = server.get(f"/models/{model}/events", headers=AUTH)
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["events"]))


def timeline(server: LiveServer, model: str) -> str:
    return "\n".join(
        f"{e['at']}  {e['type']:<18} v{e['version'] or '-':<3} {e['reason']}"
        for e in events(server, model)
    )


def row(model: str, rng: random.Random) -> tuple[dict[str, float], Any]:
    """A random dataset row: its features as a request, and its true value."""
    data = DATA[model]
    i = rng.randrange(len(data))
    return data.X.iloc[i].to_dict(), data.y.iloc[i]


def drive(
    server: LiveServer,
    model: str,
    actual: Any,
    until: set[str],
    timeout_s: float = 240,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Predict and send ground truth (``actual(prediction, version, truth)``) until one of
    the ``until`` events appears; every prediction must succeed. Returns the events and the
    versions that answered, in order."""
    rng = random.Random(11)
    answered = []
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        features, truth = row(model, rng)
        r = server.post(f"/predict/{model}", json=features)
        assert r.status_code == 200, r.text  # the champion never stops serving
        out = r.json()
        answered.append(out["version"])
        feedback = {"prediction_id": out["prediction_id"],
                    "actual": actual(out["prediction"], out["version"], truth)}  # fmt: skip
        assert server.post("/feedback", json=feedback).status_code == 200
        n += 1
        if n % 10 == 0:
            seen = events(server, model)
            if {e["type"] for e in seen} & until:
                return seen, answered
    raise AssertionError(f"no {until} within {timeout_s} s:\n{timeline(server, model)}")


def wait_served(server: LiveServer, model: str, version: str, timeout_s: float = 30) -> None:
    """Until 20 times in a row ``version`` answers a prediction and the model's description
    shows it as champion with no challenger or shadow traffic. Each request opens a new connection,
    so either worker may take it; a worker that has not yet polled the change (every
    reload interval) breaks the streak."""
    features, _ = row(model, random.Random(3))
    streak, deadline = 0, time.monotonic() + timeout_s
    while streak < 20:
        assert time.monotonic() < deadline, f"{version} not served by every worker"
        r = server.post(f"/predict/{model}", json=features)
        assert r.status_code == 200
        info = server.get(f"/models/{model}").json()
        settled = (
            r.json()["version"] == version == info["version"]
            and info["traffic"]["challenger_percent"] == 0
            and info["traffic"]["shadow_percent"] == 0
        )
        streak = streak + 1 if settled else 0


def test_events_need_the_read_scope(server: LiveServer) -> None:
    assert server.get("/models/iris/events").status_code == 401
    reader = {"Authorization": f"Bearer {READER}"}
    assert server.get("/models/iris/events", headers=reader).status_code == 200
    assert server.post("/models/iris/rollback", headers=reader).status_code == 403
    assert server.get("/models/nope/events", headers=AUTH).status_code == 404
    assert server.get("/models/iris/events?type=exploded", headers=AUTH).status_code == 422


def test_a_scheduled_retrain_is_canaried_and_promoted_on_correct_feedback(
    server: LiveServer,
) -> None:
    before = server.get("/models/iris").json()["version"]
    seen, answered = drive(server, "iris", lambda _p, _v, truth: truth, {"promoted", "rolled_back"})
    print(f"\niris timeline (oldest first):\n{timeline(server, 'iris')}")
    assert [e["type"] for e in seen] == [
        "retrain_triggered", "retrain_succeeded", "canary_started", "promoted",
    ]  # fmt: skip
    triggered, succeeded, canary, promoted = seen
    assert triggered["details"]["trigger"] == "schedule"
    assert triggered["reason"].startswith("scheduled: every 2 s, last training")
    new = succeeded["version"]
    assert new != before and canary["version"] == new == promoted["version"]
    assert "challenger of a canary rollout" in succeeded["reason"]
    assert "50% of requests until 30 labelled predictions per arm decide" in canary["reason"]
    test = promoted["details"]["test"]
    assert test["test"] == "two-proportion z-test, one-sided"
    assert min(test["n_challenger"], test["n_champion"]) >= 30
    assert "not worse at 95% confidence" in promoted["reason"]
    # Both arms answered during the canary; now the promoted version serves everywhere.
    assert {before, new} <= set(answered)
    wait_served(server, "iris", new)
    versions = {v["version"]: v for v in server.get("/models/iris/versions", headers=AUTH).json()}
    assert "champion" in versions[new]["aliases"]
    assert versions[new]["gate"]["decision"] == "canary"


def test_a_worse_challenger_is_rolled_back_while_the_champion_serves(server: LiveServer) -> None:
    champion = server.get("/models/housing").json()["version"]
    noise = random.Random(5)

    def favour_the_champion(prediction: float, version: str, _truth: float) -> float:
        # The champion is off by about 0.05, the challenger by about 0.6.
        off = 0.0 if version == champion else 0.6
        return prediction + off + noise.gauss(0, 0.05)

    seen, answered = drive(server, "housing", favour_the_champion, {"promoted", "rolled_back"})
    print(f"\nhousing timeline (oldest first):\n{timeline(server, 'housing')}")
    assert [e["type"] for e in seen] == [
        "retrain_triggered", "retrain_succeeded", "canary_started", "rolled_back",
    ]  # fmt: skip
    rolled_back = seen[-1]
    challenger = rolled_back["version"]
    assert challenger != champion and challenger in answered
    assert rolled_back["details"]["test"]["test"] == (
        "Welch's t-test on absolute errors, one-sided"
    )
    assert "worse at 95% confidence" in rolled_back["reason"]
    assert "not worse" not in rolled_back["reason"]
    assert rolled_back["details"]["test"]["p_value"] < 0.05
    # The champion kept its alias and serves every request; the challenger has no traffic
    # and no alias, and carries the reason.
    wait_served(server, "housing", champion)
    versions = {
        v["version"]: v for v in server.get("/models/housing/versions", headers=AUTH).json()
    }
    assert versions[challenger]["aliases"] == []
    assert "champion" in versions[champion]["aliases"]


def test_each_model_was_retrained_once_by_two_workers(server: LiveServer) -> None:
    for model in ("iris", "housing"):
        triggered = [e for e in events(server, model) if e["type"] == "retrain_triggered"]
        assert len(triggered) == 1, timeline(server, model)
    jobs = server.get("/retrain", headers=AUTH).json()["items"]
    assert sorted(j["model"] for j in jobs) == ["housing", "iris"]
    assert server.metric("model_events_total", model="iris", type="promoted") == 1
    assert server.metric("model_events_total", model="housing", type="rolled_back") == 1

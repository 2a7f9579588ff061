"""A real Prometheus scraping the real API: every dashboard query and recording rule returns data.

Also: feedback and drift over HTTP, a drift alert reaching "firing", and metrics that add up
across two uvicorn workers.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from prediction_service.registry import Registry
from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, ROOT, require_program
from tests.live import LiveServer, free_port, wait_for_http
from tests.test_lifecycle_live import AUTH, own_registry, start, wait_job

pytestmark = pytest.mark.live

Trained = tuple[Settings, dict[str, TrainingResult]]
MON = ROOT / "monitoring"
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def housing_rows(n: int, seed: int, shift: float = 1.0) -> list[dict[str, Any]]:
    frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").drop(columns="MedHouseVal")
    if shift != 1.0:
        frame = frame[frame.MedInc * shift <= 25.0].copy()  # stay inside the valid range
        frame["MedInc"] *= shift
    return list(frame.sample(n, random_state=seed).to_dict(orient="records"))


# -- feedback and drift over HTTP ----------------------------------------------------------


@pytest.fixture(scope="module")
def monitored(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("monitored")
    server = start(
        own_registry(trained, workdir), workdir, interval=2.0, PREDICT_DRIFT_INTERVAL_S="1"
    )
    yield server
    server.stop()


def test_feedback_feeds_live_quality(monitored: LiveServer) -> None:
    ids = [
        monitored.post("/predict/iris", json=IRIS_RECORD).json()["prediction_id"] for _ in range(4)
    ]
    answers = ["setosa", "setosa", "setosa", "virginica"]
    for pid, actual in zip(ids, answers):
        r = monitored.post("/feedback", json={"prediction_id": pid, "actual": actual})
        assert r.status_code == 200, r.text
    assert r.json()["live_quality"]["accuracy"] == 0.75 and r.json()["live_quality"]["window"] == 4
    version = r.json()["version"]
    assert (
        monitored.metric("model_live_quality", model="iris", version=version, metric="accuracy")
        == 0.75
    )

    again = monitored.post("/feedback", json={"prediction_id": ids[0], "actual": "setosa"})
    assert again.status_code == 409 and "already has a ground-truth value" in again.json()["detail"]
    unknown = monitored.post("/feedback", json={"prediction_id": "f" * 32, "actual": "setosa"})
    assert unknown.status_code == 404
    wrong = monitored.post("/feedback", json={"prediction_id": ids[1], "actual": 2.5})
    assert wrong.status_code == 422 and "is not a class of iris" in wrong.json()["detail"]

    pid = monitored.post("/predict/housing", json=HOUSING_RECORD).json()["prediction_id"]
    bad = monitored.post("/feedback", json={"prediction_id": pid, "actual": "setosa"})
    assert bad.status_code == 422 and "housing needs a number" in bad.json()["detail"]
    neither = monitored.post("/feedback", json={"prediction_id": pid, "actual": "expensive"})
    assert neither.status_code == 422 and "actual" in neither.json()["detail"]
    ok = monitored.post("/feedback", json={"prediction_id": pid, "actual": 4.526})
    quality = ok.json()["live_quality"]
    assert ok.status_code == 200 and quality["window"] == 1
    assert quality["mae"] == pytest.approx(quality["rmse"]) and quality["mae"] < 0.6


def test_drift_needs_enough_traffic_flags_the_shifted_feature_only(monitored: LiveServer) -> None:
    # (Other tests of this module sent fewer than 200 housing rows before this one.)
    early = monitored.get("/drift/housing").json()
    assert early["status"] == "insufficient_data" and early["drifted_features"] == []
    assert "drift needs at least 200" in early["detail"]
    assert monitored.get("/drift/wine").status_code == 404

    r = monitored.post("/predict/housing/batch", json={"records": housing_rows(1000, seed=1)})
    assert r.status_code == 200
    calm = monitored.get("/drift/housing").json()
    assert calm["status"] == "ok" and calm["window"] == 1000
    assert calm["drifted_features"] == [], calm["features"]
    assert max(f["psi"] for f in calm["features"].values()) < 0.1

    shifted = housing_rows(1000, seed=2, shift=3.0)
    assert monitored.post("/predict/housing/batch", json={"records": shifted}).status_code == 200
    drift = monitored.get("/drift/housing").json()
    assert drift["drifted_features"] == ["MedInc"], drift["features"]
    assert drift["features"]["MedInc"]["psi"] > 1.0 and drift["prediction"]["drifted"] is True
    assert drift["reference_version"] == "1"
    assert monitored.metric("feature_drift_detected", model="housing", feature="MedInc") == 1
    assert monitored.metric("feature_drift_detected", model="housing", feature="HouseAge") == 0


# -- a real Prometheus -------------------------------------------------------------------


def prometheus_config(workdir: Path, target: str) -> Path:
    """The project's config and rules, pointed at the test API and evaluated every second."""
    config = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting")
    config["scrape_configs"] = [
        {"job_name": "prediction-api", "static_configs": [{"targets": [target]}]}
    ]
    rules = workdir / "rules"
    rules.mkdir()
    for path in (MON / "prometheus" / "rules").glob("*.yml"):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "FeatureDriftDetected":
                    rule["for"] = "0s"  # the 15-minute hold is covered by promtool's unit test
        (rules / path.name).write_text(yaml.safe_dump(doc))
    config["rule_files"] = [str(rules / "*.yml")]
    out = workdir / "prometheus.yml"
    out.write_text(yaml.safe_dump(config))
    return out


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        binary = require_program("prometheus")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={prometheus_config(workdir, target)}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_http(f"{self.url}/-/ready", self.proc, 60,
                      lambda: (workdir / "prometheus.log").read_text()[-3000:])  # fmt: skip

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((MON / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], target["expr"]))
        for mark in board["annotations"]["list"]:
            out.append((path.stem, f"annotation {mark['name']}", mark["expr"]))
    return out


def substitute(expr: str, model: str) -> str:
    for var, value in {**GRAFANA_VARS, "$model": model}.items():
        expr = expr.replace(var, value)
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"unknown Grafana variable {left} in {expr}"
    return expr


@pytest.fixture(scope="module")
def scraped(
    monitored: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), monitored.url.removeprefix("http://"))
    # Mixed traffic: both models, batches, bad input, unknown model, feedback, a retrain,
    # once Prometheus has scraped the API: the event annotations need it to have seen the
    # event counters at 0 before the retrain raises them (ready is not yet scraped).
    deadline = time.monotonic() + 30
    while not prom.query('model_events_total{model="iris", type="retrain_triggered"}'):
        assert time.monotonic() < deadline, "Prometheus never scraped the API"
        time.sleep(0.2)
    for _ in range(20):
        monitored.post("/predict/iris", json=IRIS_RECORD)
        monitored.post("/predict/housing", json=HOUSING_RECORD)
    monitored.post("/predict/iris", json={"sepal_length": "x"})
    monitored.post("/predict/wine", json={})
    monitored.post("/predict/housing/batch", json={"records": housing_rows(300, seed=5, shift=3.0)})
    job = monitored.post(
        "/retrain", json={"model": "iris", "candidates": ["logistic_regression"]}, headers=AUTH
    ).json()
    assert wait_job(monitored, job["id"])["status"] == "succeeded"
    # The version before it as a shadow, as an operator sets one (the Shadow row's panels).
    registry = Registry(
        monitored.env["PREDICT_TRACKING_URI"], Path(monitored.env["PREDICT_ARTIFACT_ROOT"])
    )
    registry.set_alias("IrisBestModel", "challenger", "1")
    shadow = monitored.post("/models/iris/shadow", json={"percent": 100}, headers=AUTH)
    assert shadow.status_code == 200 and shadow.json()["shadow_percent"] == 100, shadow.text
    pid = monitored.post("/predict/iris", json=IRIS_RECORD).json()["prediction_id"]
    monitored.post("/feedback", json={"prediction_id": pid, "actual": "setosa"})
    monitored.get("/drift/housing")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # ~10 scrapes, so every rate() window has samples
        up = prom.query('count_over_time(up{job="prediction-api"}[1m])')
        if up and float(up[0]["value"][1]) >= 10:
            break
        time.sleep(1)
    # Keep traffic flowing while Prometheus watches.
    for _ in range(10):
        monitored.post("/predict/iris", json=IRIS_RECORD)
        monitored.post("/predict/housing", json=HOUSING_RECORD)
    agreement = monitored.get("/models/iris").json()["traffic"]["agreement"]
    assert agreement["pairs"] > 0 and agreement["agreement"] is not None
    time.sleep(3)
    yield prom
    prom.stop()


def test_every_dashboard_query_returns_data(scraped: Prometheus) -> None:
    models = {v["metric"]["model"] for v in scraped.query("model_loaded")}
    assert models == {"housing", "iris"}
    queries = dashboard_queries()
    assert len(queries) >= 40
    empty = []
    for board, title, expr in queries:
        per_model = {m: scraped.query(substitute(expr, m)) for m in sorted(models)}
        # Task-specific panels (class distribution, predicted values) need only their own models.
        if not any(per_model.values()):
            empty.append(f"{board} / {title}: {expr}")
    assert not empty, "\n".join(empty)


def test_every_recording_rule_returns_data(scraped: Prometheus) -> None:
    groups = yaml.safe_load((MON / "prometheus" / "rules" / "recording.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 8
    for rule in rules:
        assert scraped.query(rule["expr"]), rule["expr"]
        assert scraped.query(rule["record"]), rule["record"]


def test_drift_alert_fires(scraped: Prometheus) -> None:
    deadline = time.monotonic() + 30
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:
        alerts = requests.get(f"{scraped.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        firing = [
            a for a in alerts
            if a["labels"]["alertname"] == "FeatureDriftDetected" and a["state"] == "firing"
        ]  # fmt: skip
        time.sleep(1)
    assert firing, "FeatureDriftDetected never fired"
    assert {(a["labels"]["model"], a["labels"]["feature"]) for a in firing} == {
        ("housing", "MedInc")
    }
    assert "See /drift/housing" in firing[0]["annotations"]["description"]


# -- several workers -----------------------------------------------------------------------


def test_two_workers_add_up_their_counters(trained: Trained, tmp_path: Path) -> None:
    settings = own_registry(trained, tmp_path)
    server = LiveServer(settings, tmp_path / "server.log", workers=2).start()
    try:
        pids = set()
        for _ in range(40):  # new connections, so the kernel spreads them over both workers
            pids.add(requests.get(f"{server.url}/health", timeout=10).json()["worker_pid"])
            for _ in range(5):
                r = requests.post(f"{server.url}/predict/iris", json=IRIS_RECORD, timeout=10)
                assert r.status_code == 200
        assert len(pids) == 2, pids
        # Every scrape, whichever worker answers it, sees the total of both.
        totals = {server.metric("predictions_total", model="iris") for _ in range(10)}
        assert totals == {200.0}
        assert server.metric("service_workers") == 2
        assert server.metric("http_requests_total", route="/predict/iris", status="200") == 200
    finally:
        server.stop()

"""The prediction API over real HTTP against a real uvicorn process and real registry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prediction_service.registry import Registry
from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, ROOT, make_settings
from tests.live import LiveServer

pytestmark = pytest.mark.live

Trained = tuple[Settings, dict[str, TrainingResult]]


def test_housing_reference_record(live: LiveServer) -> None:
    r = live.post("/predict/housing", json=HOUSING_RECORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 3.5 <= body["prediction"] <= 5.0  # the true value is 4.526
    assert body["model"] == "housing" and body["registered_name"] == "CaliforniaHousingBestModel"
    assert body["version"] == "1" and len(body["prediction_id"]) == 32
    assert body["latency_ms"] > 0
    assert "probabilities" not in body


def test_iris_reference_record(live: LiveServer) -> None:
    body = live.post("/predict/iris", json=IRIS_RECORD).json()
    assert body["prediction"] == "setosa"
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert body["probabilities"]["setosa"] > 0.9
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-9


def test_batch_of_1000_housing_rows_in_order(live: LiveServer, trained: Trained) -> None:
    settings, _ = trained
    frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").sample(1000, random_state=3)
    records = frame.drop(columns="MedHouseVal").to_dict(orient="records")
    r = live.post("/predict/housing/batch", json={"records": records})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 1000 and len(body["predictions"]) == 1000
    got = np.array([p["prediction"] for p in body["predictions"]])
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    native = registry.load_model("CaliforniaHousingBestModel", body["version"])
    expected = native.predict(frame.drop(columns="MedHouseVal").to_numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert len({p["prediction_id"] for p in body["predictions"]}) == 1000


def test_serving_loads_no_scikit_learn_lightgbm_skops_or_matplotlib(
    trained: Trained, tmp_path: Path
) -> None:
    """The portable predictors are why start-up is fast and small: those imports alone cost
    seconds and a hundred MB. A new dependency that brings them back fails here."""
    settings, _ = trained
    script = (
        "import asyncio, sys\n"
        "from prediction_service.api.app import create_app\n"
        "app = create_app()\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        kinds = {n: app.state.core.store.get(n).predictor_kind for n in ('housing', 'iris')}\n"
        "        heavy = sorted(m for m in ('sklearn', 'lightgbm', 'skops', 'scipy.stats', 'matplotlib')\n"
        "                       if m in sys.modules)\n"
        "        print(kinds, heavy)\n"
        "asyncio.run(main())\n"
    )
    env = {
        **os.environ,
        **settings.child_env(),
        "PREDICT_DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'housing': 'portable', 'iris': 'portable'} []"


def _bad(**changes: object) -> dict[str, object]:
    record: dict[str, object] = dict(IRIS_RECORD)
    for key, value in changes.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return record


_DROP = object()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_bad(colour="blue"), 422, "colour: Extra inputs are not permitted"),
        (_bad(petal_width=_DROP), 422, "petal_width: Field required"),
        (_bad(sepal_length="5.1"), 422, "sepal_length: Input should be a valid number"),
        (_bad(sepal_length=True), 422, "sepal_length: Input should be a valid number"),
        (_bad(sepal_width=None), 422, "sepal_width: Input should be a valid number"),
        (_bad(petal_length=11.0), 422, "petal_length: Input should be less than or equal to 10"),
        (_bad(petal_length=-0.5), 422, "petal_length: Input should be greater than or equal to 0"),
        ([IRIS_RECORD], 422, "body: Input should be an object"),
    ],
)
def test_bad_input_gets_4xx_naming_the_field(
    live: LiveServer, body: object, status: int, words: str
) -> None:
    r = live.post("/predict/iris", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
         "sepal_length: Input should be a finite number"),
        (b'{"sepal_length": Infinity, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
         "sepal_length: Input should be a finite number"),
        (b'{"sepal_length": 5.1,', "body: not valid JSON: EOF while parsing a value"),
        (b"", "body: empty; send a JSON object"),
    ],
)  # fmt: skip
def test_non_finite_and_malformed_json(live: LiveServer, raw: bytes, words: str) -> None:
    r = live.post("/predict/iris", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]


def test_unknown_model_and_route(live: LiveServer) -> None:
    for path in ("/predict/wine", "/predict/wine/batch", "/models/wine"):
        r = live.post(path, json=IRIS_RECORD) if "predict" in path else live.get(path)
        assert r.status_code == 404
        assert "unknown model 'wine'; known models: housing, iris" in r.json()["detail"]
    assert live.get("/predictions/history?model=wine").status_code == 404
    assert live.get("/no/such/route").status_code == 404


def test_batch_limits(live: LiveServer) -> None:
    r = live.post("/predict/iris/batch", json={"records": [IRIS_RECORD] * 10_001})
    assert r.status_code == 413
    assert "10001 records exceeds the limit of 10000" in r.json()["detail"]
    r = live.post("/predict/iris/batch", json={"records": []})
    assert r.status_code == 422 and "records" in r.json()["detail"]
    r = live.post("/predict/iris/batch", json={"records": [IRIS_RECORD, _bad(sepal_width=99.0)]})
    assert r.status_code == 422
    assert "records.1.sepal_width: Input should be less than or equal to 10" in r.json()["detail"]
    r = live.post("/predict/iris/batch", json={"records": [IRIS_RECORD] * 10_000})
    assert r.status_code == 200 and r.json()["count"] == 10_000


def test_history_shows_what_was_just_predicted(live: LiveServer) -> None:
    ids = [
        live.post("/predict/iris", json=IRIS_RECORD, headers={"X-Request-ID": f"hist-{i}"}).json()[
            "prediction_id"
        ]
        for i in range(3)
    ]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = live.get("/predictions/history?model=iris&limit=3").json()["items"]
        if [i["id"] for i in items] == ids[::-1]:
            break
        time.sleep(0.1)
    assert [i["id"] for i in items] == ids[::-1]  # newest first
    assert [i["request_id"] for i in items] == ["hist-2", "hist-1", "hist-0"]
    assert items[0]["features"] == IRIS_RECORD and items[0]["prediction"] == "setosa"
    assert items[0]["created_at"].endswith("+00:00")
    page1 = live.get("/predictions/history?model=iris&limit=2").json()
    page2 = live.get(
        f"/predictions/history?model=iris&limit=2&cursor={page1['next_cursor']}"
    ).json()
    assert [i["id"] for i in page1["items"]] == ids[:0:-1]
    assert page2["items"][0]["id"] == ids[0]
    assert live.get("/predictions/history?limit=0").status_code == 422


def test_info_health_ready_models_metrics(live: LiveServer) -> None:
    root = live.get("/").json()
    assert root["models"] == ["housing", "iris"] and root["links"]["docs"] == "/docs"
    health = live.get("/health").json()
    assert health["status"] == "ok"
    assert health["models"]["iris"] == {
        "loaded": True, "version": "1", "registered_name": "IrisBestModel", "error": None,
    }  # fmt: skip
    assert health["database"]["reachable"] and health["registry"]["reachable"]
    assert health["memory_rss_bytes"] > 0 and health["uptime_s"] > 0
    assert live.get("/ready").json() == {"ready": True}
    info = live.get("/models/housing").json()
    assert info["version"] == "1" and info["aliases"] == ["champion"]
    assert info["metrics"]["test_rmse"] <= 0.45 and info["params"]["candidate"] == "lightgbm"
    assert len(info["dataset_digest"]) == 64 and info["run_id"] and info["trained_at"]
    assert info["predictor"] == "portable"  # served from the arrays training stored
    assert [m["name"] for m in live.get("/models").json()] == ["housing", "iris"]

    before = live.metric("predictions_total", model="iris", version="1")
    live.post("/predict/iris", json=IRIS_RECORD)
    assert live.metric("predictions_total", model="iris", version="1") == before + 1
    assert live.metric("http_requests_total", route="/predict/iris", status="200") >= 1
    # An unknown model is counted under the route template, not under a path per name.
    unknown = live.metric("http_requests_total", route="/predict/{model}", status="404")
    assert live.post("/predict/wine", json=IRIS_RECORD).status_code == 404
    assert live.metric("http_requests_total", route="/predict/{model}", status="404") == unknown + 1
    assert live.metric("http_requests_total", route="/predict/wine") == 0
    assert live.metric("http_requests_total", route="/health") == 0  # probes are not traffic
    text = live.get("/metrics/prometheus").text
    assert (
        "http_request_duration_seconds_bucket" in text and 'model_loaded{model="iris"} 1.0' in text
    )


def test_openapi_generated_from_specs(live: LiveServer) -> None:
    schema = live.get("/openapi.json").json()
    housing = schema["components"]["schemas"]["HousingRecord"]
    assert set(housing["properties"]) == set(HOUSING_RECORD)
    assert housing["properties"]["Latitude"]["minimum"] == 32.0
    assert housing["properties"]["Latitude"]["maximum"] == 42.5
    assert housing["examples"][0]["MedInc"] == 8.3252  # first row of the dataset
    assert housing["additionalProperties"] is False
    iris = schema["components"]["schemas"]["IrisRecord"]
    assert iris["required"] == list(IRIS_RECORD)
    assert "/predict/iris/batch" in schema["paths"] and "/predict/{model}" not in schema["paths"]


# -- servers of their own: shutdown accounting and a failing database ---------------------


@pytest.fixture
def own_server(trained: Trained, tmp_path: Path) -> tuple[LiveServer, Path]:
    settings, _ = trained
    db = tmp_path / "own.db"
    own = make_settings(
        tmp_path,
        tracking_uri=settings.effective_tracking_uri,
        artifact_root=settings.artifact_path,
        database_url=f"sqlite:///{db}",
    )
    return LiveServer(own, tmp_path / "server.log").start(), db


def test_after_clean_shutdown_logged_rows_equal_predictions_served(
    own_server: tuple[LiveServer, Path],
) -> None:
    server, db = own_server
    served = 0
    for i in range(200):
        assert server.post("/predict/iris", json=IRIS_RECORD).status_code == 200
        served += 1
    for _ in range(3):
        r = server.post("/predict/housing/batch", json={"records": [HOUSING_RECORD] * 2500})
        served += r.json()["count"]
    assert server.metric("predictions_total") == served
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert server.stop() in (0, -signal.SIGTERM)
    with sqlite3.connect(db) as conn:
        logged = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert logged == served == 7700


def test_unwritable_database_does_not_fail_predictions(own_server: tuple[LiveServer, Path]) -> None:
    server, db = own_server
    locker = sqlite3.connect(db, timeout=0.1, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # every write from the service now fails
    try:
        for _ in range(20):
            r = server.post("/predict/iris", json=IRIS_RECORD)
            assert r.status_code == 200 and r.json()["prediction"] == "setosa"
        # Each attempt waits out SQLite's 2 s lock timeout, and the writer retries a batch
        # for about 3.5 s more: ~11 s per batch, and the writer's flush timer may have split
        # the 20 rows into two batches.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if server.metric("prediction_log_write_failures_total") >= 20:
                break
            time.sleep(0.2)
        assert server.metric("prediction_log_write_failures_total") >= 20
        # Said while it lasts, not only counted: health, and a gauge for the alert.
        health = server.get("/health").json()
        assert health["status"] == "degraded" and health["prediction_log"]["writable"] is False
        assert "locked" in health["prediction_log"]["last_error"]
        assert server.metric("prediction_log_failing") == 1
    finally:
        locker.rollback()
        locker.close()
    assert server.post("/predict/iris", json=IRIS_RECORD).status_code == 200
    deadline = time.monotonic() + 10  # the writer's probe, or the next write, clears it
    while server.get("/health").json()["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.get("/health").json()["prediction_log"]["writable"] is True
    assert server.metric("prediction_log_failing") == 0
    server.stop()
    assert "prediction log" in server.output() and "not written" in server.output()

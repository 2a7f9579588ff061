"""Adaptive batching in a real server: concurrent single-row requests on every lane share
model calls, and each is still answered with its own prediction, logged as its own row and
counted as its own request."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import yaml

from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.training.pipeline import run_training
from tests.conftest import make_settings, small_settings
from tests.live import LiveServer, free_port
from tests.test_protocols import HOUSING, Small

pytestmark = pytest.mark.live

BATCHING = {"max_batch_size": 16, "max_latency_ms": 20, "min_row_cost_us": 0}
# A housing model whose one-row predict (about 100 us here) overlaps the next request's
# arrival, so concurrent requests do meet in the queue.
HEAVY = {"name": "heavy", "estimator": "lightgbm_regressor",
         "params": {"n_estimators": 2000, "num_leaves": 63, "max_depth": 8, "n_jobs": 2}}  # fmt: skip


def batched_specs(small: Small, folder: Path) -> Path:
    """The small store's specs with adaptive batching on for every model."""
    folder.mkdir()
    for path in small[0].specs_path.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["serving"] = {"batching": BATCHING}
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def heavy(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A store whose housing champion is HEAVY, with batching on in every spec."""
    workdir = tmp_path_factory.mktemp("heavy")
    specs_dir = batched_specs(small, workdir / "specs")
    raw = yaml.safe_load((specs_dir / "housing.yaml").read_text())
    raw["candidates"] = [HEAVY]
    (specs_dir / "housing.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = make_settings(workdir, specs_dir=specs_dir)
    for spec in load_specs(specs_dir).values():
        run_training(spec, settings, progress=lambda _m: None)
    return settings


def served(heavy: Settings, workdir: Path, **env: str) -> tuple[Settings, LiveServer]:
    """A server over the heavy store with a prediction log of its own."""
    settings = make_settings(
        workdir, specs_dir=heavy.specs_path, tracking_uri=heavy.effective_tracking_uri,
        artifact_root=heavy.artifact_path, logs_dir=workdir / "logs",
    )  # fmt: skip
    return settings, LiveServer(settings, workdir / "server.log", **env)


def test_concurrent_requests_share_model_calls_on_every_lane(
    heavy: Settings, tmp_path: Path
) -> None:
    grpc_port = free_port()
    settings, server = served(heavy, tmp_path, PREDICT_GRPC_PORT=str(grpc_port))
    server.start()
    frame = HOUSING.sample(48, random_state=3)
    records = frame.to_dict(orient="records")
    grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    def native(record: dict[str, float]) -> Any:
        return server.post("/predict/housing", json=record).json()["prediction"]

    def v2(i: int) -> Any:  # tritonclient.http's gevent client stays in one thread
        row = frame.iloc[i].tolist()
        body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP64", "data": row}]}
        outputs = server.post("/v2/models/housing/infer", json=body).json()["outputs"]
        return next(o for o in outputs if o["name"] == "predict")["data"][0]

    def v2_grpc(i: int) -> Any:
        tensor = triton_grpc.InferInput("x", [1, 8], "FP64")
        tensor.set_data_from_numpy(frame.iloc[[i]].to_numpy())
        return float(grpc.infer("housing", [tensor]).as_numpy("predict")[0])

    try:
        described = server.get("/models/housing").json()
        assert described["batching"].startswith("on: up to 16 rows a call"), described
        print("batching:", described["batching"])
        # One request, one call: the reference every lane's batched answers must equal.
        batch = server.post("/predict/housing/batch", json={"records": records}).json()
        reference = [p["prediction"] for p in batch["predictions"]]
        answers: dict[str, list[Any]] = {}
        with ThreadPoolExecutor(16) as pool:
            answers["native"] = list(pool.map(native, records))
            answers["v2"] = list(pool.map(v2, range(48)))
            answers["v2_grpc"] = list(pool.map(v2_grpc, range(48)))
        assert answers == {lane: reference for lane in answers}
        calls = server.metric("prediction_batch_rows_count", model="housing")
        rows = server.metric("prediction_batch_rows_sum", model="housing")
        waits = server.metric("prediction_batch_wait_seconds_count", model="housing")
        counted = {p: server.metric("predictions_total", protocol=p, model="housing")
                   for p in ("native", "v2", "v2_grpc")}  # fmt: skip
        singles = server.metric("prediction_duration_seconds_count", model="housing", kind="single")
    finally:
        server.stop()
    print(f"{rows - 48:.0f} single-row requests in {calls - 1:.0f} model calls")
    assert rows == 48 + 144 and waits == 1 + 144 and calls - 1 < 144  # calls were shared
    assert counted == {"native": 48 + 48, "v2": 48, "v2_grpc": 48}  # each its own request
    assert singles == 144  # and its own latency
    with sqlite3.connect(settings.effective_database_url.removeprefix("sqlite:///")) as conn:
        logged = conn.execute(
            "SELECT id, prediction FROM predictions WHERE model = 'housing'"
        ).fetchall()
    assert len(logged) == 192 and len({row[0] for row in logged}) == 192
    assert sorted(float(row[1]) for row in logged) == sorted(reference * 4)


def test_a_cheap_model_is_served_unbatched_and_says_why(small: Small, tmp_path: Path) -> None:
    folder = batched_specs(small, tmp_path / "specs")
    for path in folder.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["serving"]["batching"]["min_row_cost_us"] = 1e6  # no model is this slow
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    server = LiveServer(small_settings(small, tmp_path, specs_dir=folder), tmp_path / "s.log")
    server.start()
    try:
        described = server.get("/models/housing").json()["batching"]
        assert described.startswith("off: one row predicts in") and "too cheap" in described
        np.testing.assert_equal(server.metric("prediction_batch_rows_count"), 0)
    finally:
        server.stop()


def test_sigterm_under_batched_traffic_answers_and_logs_every_accepted_request(
    heavy: Settings, tmp_path: Path
) -> None:
    settings, server = served(heavy, tmp_path)
    server.start()
    record = HOUSING.iloc[0].to_dict()
    answered: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    r = session.post(f"{server.url}/predict/housing", json=record, timeout=30)
                except requests.ConnectionError:
                    return  # the server stopped taking requests
                statuses.append(r.status_code)
                if r.status_code == 200:
                    answered.append(r.json()["prediction_id"])

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # batches are forming
    code = server.stop()
    stop.set()
    for t in threads:
        t.join(30)
    print(f"{len(answered)} answered before the stop; statuses {sorted(set(statuses))}")
    assert code in (0, -signal.SIGTERM)
    assert len(answered) > 100 and set(statuses) <= {200, 503}
    with sqlite3.connect(settings.effective_database_url.removeprefix("sqlite:///")) as conn:
        logged = {row[0] for row in conn.execute("SELECT id FROM predictions")}
    assert set(answered) <= logged  # every answered prediction is in the log

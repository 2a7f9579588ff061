"""Adaptive batching in a real server: concurrent single-row requests on every lane share
model calls, and each is still answered with its own prediction, logged as its own row and
counted as its own request."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml

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


def test_concurrent_requests_share_model_calls_on_every_lane(small: Small, tmp_path: Path) -> None:
    specs_dir = batched_specs(small, tmp_path / "specs")
    raw = yaml.safe_load((specs_dir / "housing.yaml").read_text())
    raw["candidates"] = [HEAVY]
    (specs_dir / "housing.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = make_settings(tmp_path, specs_dir=specs_dir, logs_dir=tmp_path / "logs")
    for spec in load_specs(specs_dir).values():
        run_training(spec, settings, progress=lambda _m: None)
    grpc_port = free_port()
    server = LiveServer(settings, tmp_path / "server.log", PREDICT_GRPC_PORT=str(grpc_port))
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

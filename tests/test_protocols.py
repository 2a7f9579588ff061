"""Clients no one here wrote, against a real uvicorn server: tritonclient (HTTP and gRPC) for
the Open Inference Protocol, MLflow's ScoringServerClient and ``mlflow models serve`` bodies
for ``/invocations``; and every lane answering as the same service.

Small models (see ``small`` in conftest), so these run in seconds. ``tritonclient.grpc`` and
our generated protocol modules both register the ``inference`` protobuf package, so only the
server process imports ours.
"""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from sklearn.datasets import load_wine
from tritonclient.utils import InferenceServerException

from prediction_service.registry import Registry
from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.training.pipeline import TrainingResult, run_training
from tests.conftest import (
    HOUSING_RECORD,
    IRIS_RECORD,
    ROOT,
    make_settings,
    small_settings,
    write_small_specs,
)
from tests.live import LiveServer, free_port

pytestmark = pytest.mark.live

Small = tuple[Settings, dict[str, TrainingResult]]
IRIS = pd.read_csv(ROOT / "data" / "iris_raw.csv").drop(columns="target")
IRIS.columns = list(IRIS_RECORD)
HOUSING = pd.read_csv(ROOT / "data" / "housing_raw.csv").drop(columns="MedHouseVal")
FRAMES = {"iris": IRIS.sample(20, random_state=1), "housing": HOUSING.sample(20, random_state=1)}


def serve(small: Small, workdir: Path, shortcuts: bool = True) -> LiveServer:
    settings = small_settings(small, workdir)
    grpc_port = free_port()
    server = LiveServer(
        settings,
        workdir / "server.log",
        PREDICT_GRPC_PORT=str(grpc_port),
        PREDICT_SHORTCUTS=str(shortcuts).lower(),
    )
    server.grpc_url = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
    return server.start()


# Every protocol test runs twice: with the shortcuts through library internals (the
# default), and with public APIs only (PREDICT_SHORTCUTS=false).
@pytest.fixture(scope="module", params=[True, False], ids=["shortcuts", "public"])
def server(
    small: Small, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LiveServer]:
    live = serve(small, tmp_path_factory.mktemp("protocols"), shortcuts=request.param)
    yield live
    live.stop()


def expected(small: Small, name: str, frame: pd.DataFrame) -> list[Any]:
    """What the registered model's own pyfunc predicts: the reference every lane must match."""
    settings, results = small
    Registry(settings.effective_tracking_uri, settings.artifact_path)  # points mlflow at it
    model = mlflow.pyfunc.load_model(f"models:/{results[name].registered_name}/1")
    return list(model.predict(frame))


def clients(server: LiveServer) -> list[Any]:
    url = server.url.removeprefix("http://")
    return [
        triton_http.InferenceServerClient(url),
        triton_grpc.InferenceServerClient(server.grpc_url),  # type: ignore[attr-defined]
    ]


# -- the Open Inference Protocol, with Triton's own clients ------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_health_metadata_and_infer(
    server: LiveServer, small: Small, transport: str
) -> None:
    client = clients(server)[transport == "grpc"]
    module = triton_grpc if transport == "grpc" else triton_http
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("housing", "1")
    assert not client.is_model_ready("housing", "2")
    meta = client.get_server_metadata()
    meta = meta if isinstance(meta, dict) else {"name": meta.name, "extensions": meta.extensions}
    assert meta["name"] == "prediction-service"
    model = client.get_model_metadata("housing")
    names = [t["name"] if isinstance(t, dict) else t.name for t in _field(model, "inputs")]
    assert names == list(HOUSING_RECORD)

    # iris: one [N, 4] FP32 tensor
    frame = FRAMES["iris"]
    tensor = module.InferInput("input-0", list(frame.shape), "FP32")
    tensor.set_data_from_numpy(frame.to_numpy(np.float32))
    result = client.infer("iris", [tensor])
    got = [v.decode() for v in result.as_numpy("predict")]
    assert got == expected(small, "iris", frame.astype(np.float32).astype(np.float64))
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (20, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert len(set(result.as_numpy("prediction_id"))) == 20

    # housing: one FP64 tensor per feature, and only the output asked for
    frame = FRAMES["housing"]
    inputs = []
    for name in frame.columns:
        t = module.InferInput(name, [len(frame)], "FP64")
        t.set_data_from_numpy(frame[name].to_numpy())
        inputs.append(t)
    result = client.infer("housing", inputs, outputs=[module.InferRequestedOutput("predict")])
    np.testing.assert_array_equal(result.as_numpy("predict"), expected(small, "housing", frame))
    assert result.as_numpy("prediction_id") is None

    with pytest.raises(InferenceServerException, match="unknown model 'wine'"):
        client.infer("wine", inputs)
    bad = module.InferInput("input-0", [1, 4], "FP64")
    bad.set_data_from_numpy(np.array([[5.1, 3.5, 11.0, 0.2]]))
    with pytest.raises(InferenceServerException, match=r"petal_length\[0\]: Input should be less"):
        client.infer("iris", [bad])
    with pytest.raises(InferenceServerException, match="version '9' is not served"):
        client.infer("iris", [tensor], model_version="9")


def _field(message: Any, name: str) -> Any:
    return message[name] if isinstance(message, dict) else getattr(message, name)


def test_grpc_one_typed_row_answers_as_one_input_per_feature(
    server: LiveServer, small: Small
) -> None:
    """A [1, features] FP64 tensor in typed contents (the one-row read straight from the
    message) answers exactly as the general decode of the same row, one input per feature;
    a bad value is INVALID_ARGUMENT naming the feature either way."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    def request(model: str, values: list[float], per_feature: bool) -> bytes:
        message = pb.ModelInferRequest(model_name=model)
        if per_feature:
            for name, value in zip(FRAMES[model].columns, values):
                message.inputs.add(name=name, datatype="FP64", shape=[1])
                message.inputs[-1].contents.fp64_contents.append(value)
        else:
            tensor = message.inputs.add(name="x", datatype="FP64", shape=[1, len(values)])
            tensor.contents.fp64_contents.extend(values)
        return message.SerializeToString()

    with grpc.insecure_channel(server.grpc_url) as channel:  # type: ignore[attr-defined]
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        def outputs(model: str, values: list[float], per_feature: bool) -> list[Any]:
            response = pb.ModelInferResponse.FromString(
                infer(request(model, values, per_feature), timeout=10)
            )
            return [response.model_version] + [
                (o.name, list(o.shape), list(o.contents.fp64_contents),
                 list(o.contents.bytes_contents))
                for o in response.outputs if o.name != "prediction_id"
            ]  # fmt: skip

        for model, frame in FRAMES.items():
            for row in frame.head(5).itertuples(index=False):
                values = [float(v) for v in row]
                assert outputs(model, values, False) == outputs(model, values, True)
            first = frame.columns[0]
            for bad in (float("nan"), float("inf"), -1e9, 1e9):
                for per_feature in (False, True):
                    with pytest.raises(grpc.RpcError) as error:
                        outputs(model, [bad, *values[1:]], per_feature)
                    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert first in str(error.value.details())


def test_tritonclient_http_json_data(server: LiveServer, small: Small) -> None:
    """Without the binary extension: data travels as JSON lists both ways."""
    client = clients(server)[0]
    frame = FRAMES["iris"]
    tensor = triton_http.InferInput("x", list(frame.shape), "FP64")
    tensor.set_data_from_numpy(frame.to_numpy(), binary_data=False)
    out = triton_http.InferRequestedOutput("predict", binary_data=False)
    result = client.infer("iris", [tensor], outputs=[out])
    assert "data" in result.get_output("predict")
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")] == (
        expected(small, "iris", frame)
    )


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]},
         400, "datatype 'BYTES' is not accepted"),
        ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1.0] * 4}]},
         400, "4 values for shape [2, 4]"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0] * 3}]},
         400, "one tensor must have shape [N, 4]"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 1, 1, "1"]}]},
         400, "FP64 data must be numbers"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1.0] * 4}],
          "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
        ({"inputs": []}, 400, "no inputs"),
        ({"instances": []}, 400, '"inputs" list'),
    ],
)  # fmt: skip
def test_v2_rest_errors_are_protocol_errors(
    server: LiveServer, body: Any, status: int, words: str
) -> None:
    r = server.post("/v2/models/iris/infer", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and words in r.json()["error"]


def test_v2_versions_and_metadata(server: LiveServer) -> None:
    one = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": list(IRIS_RECORD.values())}
    ok = server.post("/v2/models/iris/versions/1/infer", json={"inputs": [one], "id": "abc"})
    assert ok.status_code == 200 and ok.json()["model_version"] == "1" and ok.json()["id"] == "abc"
    missing = server.post("/v2/models/iris/versions/9/infer", json={"inputs": [one]})
    assert missing.status_code == 404 and "not served" in missing.json()["error"]
    assert server.get("/v2/models/wine").json() == {
        "error": "unknown model 'wine'; known models: housing, iris"
    }
    assert server.get("/v2/models/iris/versions/1").json()["versions"] == ["1"]
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2").json()["extensions"] == ["binary_tensor_data"]


# -- MLflow's scoring protocol ---------------------------------------------------------


def test_mlflow_scoring_server_client(server: LiveServer, small: Small) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = server.url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=10)
    assert client.get_version() == mlflow.__version__
    for name, frame in FRAMES.items():
        got = client.invoke(frame).get_predictions()
        assert list(got.iloc[:, 0]) == expected(small, name, frame)


def _bodies(frame: pd.DataFrame) -> list[tuple[str, bytes]]:
    """The bodies `mlflow models serve` accepts for a model with a column signature."""
    split = frame.to_dict(orient="split")
    records = frame.to_dict(orient="records")
    columns = frame.to_dict(orient="list")
    json = "application/json"
    return [
        (json, orjson.dumps({"dataframe_split": split})),
        (json, orjson.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}})),
        (json, orjson.dumps({"dataframe_records": records})),
        (json, orjson.dumps({"instances": records})),
        (json, orjson.dumps({"inputs": records, "params": {}})),
        (json, orjson.dumps({"inputs": columns})),
        ("text/csv", frame.to_csv(index=False).encode()),
        ("text/csv; charset=utf-8", frame.to_csv(index=False).encode()),
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["iris", "housing"])
def test_the_bodies_mlflow_models_serve_accepts(
    server: LiveServer, small: Small, name: str
) -> None:
    frame = FRAMES[name]
    want = expected(small, name, frame)
    for path in ("/invocations", f"/models/{name}/invocations"):
        for content_type, body in _bodies(frame):
            r = server.post(path, data=body, headers={"Content-Type": content_type})
            assert r.status_code == 200, (path, content_type, r.text)
            assert r.json()["predictions"] == want, (path, content_type)
    # rows without column names: only where the path names the model
    rows = orjson.dumps({"inputs": frame.to_numpy().tolist()})
    r = server.post(f"/models/{name}/invocations", data=rows)
    assert r.json()["predictions"] == want
    r = server.post("/invocations", data=rows, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "/models/<model>/invocations" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"a,b\n1,2\n", "text/csv", 422, "match no model's features exactly; housing: MedInc"),
        (b"x", "text/plain", 415, "'text/plain' is not accepted"),
        (b'{"dataframe_records": [], "inputs": []}', "application/json", 422, "exactly one of"),
        (b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,x\n", "text/csv",
         422, "CSV row 1, column 'petal_width': 'x' is not a number"),
        (b'{"dataframe_records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, '
         b'"petal_width": 9.0}]}', "application/json", 422,
         "row 0: petal_width: Input should be less than or equal to 5"),
    ],
)  # fmt: skip
def test_invocations_errors_in_mlflow_shape(
    server: LiveServer, body: bytes, content_type: str, status: int, words: str
) -> None:
    r = server.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error_code", "message"} and words in r.json()["message"]


# -- every lane is the same service ----------------------------------------------------


def test_every_lane_is_the_same_service(small: Small, tmp_path: Path) -> None:
    """The same rows through the native batch route, V2 REST (JSON and binary), V2 gRPC and
    /invocations: identical predictions, one log row per prediction per lane, and each lane
    counted under its own protocol."""
    server = serve(small, tmp_path)
    http, grpc = clients(server)
    answers: dict[str, dict[str, list[Any]]] = {}
    try:
        for name, frame in FRAMES.items():
            records = frame.to_dict(orient="records")
            native = server.post(f"/predict/{name}/batch", json={"records": records}).json()
            lanes = {"native": [p["prediction"] for p in native["predictions"]]}
            for label, client, module in (
                ("v2", http, triton_http),
                ("v2_grpc", grpc, triton_grpc),
            ):
                tensor = module.InferInput("x", list(frame.shape), "FP64")
                tensor.set_data_from_numpy(frame.to_numpy())
                values = client.infer(name, [tensor]).as_numpy("predict").tolist()
                lanes[label] = [v.decode() if isinstance(v, bytes) else v for v in values]
            body = {"dataframe_split": frame.to_dict(orient="split")}
            lanes["mlflow"] = server.post("/invocations", json=body).json()["predictions"]
            answers[name] = lanes
            assert all(v == lanes["native"] for v in lanes.values()), lanes
        counted = {
            p: server.metric("predictions_total", protocol=p)
            for p in ("native", "v2", "v2_grpc", "mlflow")
        }
    finally:
        server.stop()
    assert counted == {"native": 40, "v2": 40, "v2_grpc": 40, "mlflow": 40}
    with sqlite3.connect(tmp_path / "predictions.db") as conn:
        rows = conn.execute(
            "SELECT protocol, model, features, prediction FROM predictions ORDER BY seq"
        ).fetchall()
    assert len(rows) == 160
    by_lane: dict[str, list[tuple[str, Any, Any]]] = {}
    for protocol, model, features, prediction in rows:
        by_lane.setdefault(protocol, []).append((model, orjson.loads(features), _json(prediction)))
    reference = by_lane.pop("native")
    assert {len(v) for v in by_lane.values()} == {40} and len(by_lane) == 3
    for lane, logged in by_lane.items():
        assert logged == reference, lane


def _json(value: Any) -> Any:
    # SQLite hands a JSON number back as a number (numeric column affinity).
    return orjson.loads(value) if isinstance(value, str) else value


# -- documentation, generated code, command line ----------------------------------------


def test_openapi_documents_every_lane(server: LiveServer) -> None:
    schema = server.get("/openapi.json").json()
    paths = schema["paths"]
    for name in ("iris", "housing"):
        for path in (f"/predict/{name}", f"/predict/{name}/batch", f"/v2/models/{name}/infer",
                     f"/v2/models/{name}/versions/{{version}}/infer", f"/models/{name}/invocations"):  # fmt: skip
            assert "post" in paths[path], path
    assert "/invocations" in paths and "/v2/models/{model}" in paths
    record = paths["/predict/iris"]["post"]["requestBody"]["content"]["application/json"]
    assert record["schema"] == {"$ref": "#/components/schemas/IrisRecord"}
    assert set(schema["components"]["schemas"]["IrisRecord"]["properties"]) == set(IRIS_RECORD)
    assert "text/csv" in paths["/invocations"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["serve", "--help"],
        ["train", "--help"],
        ["score", "--help"],
        ["log", "export", "--help"],
        ["specs"],
        ["--version"],
    ],
)
def test_console_script(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prediction_service", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "prediction-service" in out.stdout or "iris: IrisBestModel" in out.stdout


def test_body_over_the_limit_is_refused_unread(server: LiveServer) -> None:
    huge = b'{"records": [' + b"1," * (40 * 1024) + b"1]}"
    r = requests.post(f"{server.url}/predict/iris", data=huge, timeout=30)
    assert r.status_code == 413 and "exceeds the limit of 65536 bytes" in r.json()["detail"]


# -- a third model: a spec file and a CSV, served on every protocol with no code change ------


def write_wine_spec(folder: Path) -> pd.DataFrame:
    """scikit-learn's wine data (on disk in the package: no download) as a third spec beside
    the shipped two: three cultivars from 13 measurements, one named through ``column``."""
    frame = load_wine(as_frame=True).frame
    frame.to_csv(folder / "wine.csv", index=False)
    features = []
    for column in frame.columns.drop("target"):
        low, high = float(frame[column].min()), float(frame[column].max())
        features.append(
            {"name": column.replace("/", "_"), "column": column,
             "min": math.floor(low * 0.5), "max": math.ceil(high * 2)}
        )  # fmt: skip
    spec = {
        "name": "wine",
        "registered_name": "WineCultivarModel",
        "description": "Cultivar of a wine from its chemistry.",
        "task": "classification",
        "data": {"path": str(folder / "wine.csv"), "min_rows": 100},
        "target": {"column": "target", "classes": ["barolo", "grignolino", "barbera"]},
        "features": features,
        "split": {"cv_folds": 2},
        "selection_metric": "accuracy",
        "candidates": [
            {"name": "linear", "estimator": "logistic_regression", "params": {"max_iter": 2000}},
            {"name": "forest", "estimator": "lightgbm_classifier",
             "params": {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 5}},
        ],  # fmt: skip
    }
    (folder / "specs" / "wine.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return frame.rename(columns=lambda c: c.replace("/", "_")).drop(columns="target")


def test_a_third_spec_is_served_on_every_protocol_and_explained(tmp_path: Path) -> None:
    specs_dir = write_small_specs(tmp_path / "specs")
    wine = write_wine_spec(tmp_path).sample(25, random_state=2)
    settings = make_settings(tmp_path, specs_dir=specs_dir, logs_dir=tmp_path / "logs")
    results = {
        name: run_training(spec, settings, progress=lambda _m: None)
        for name, spec in load_specs(specs_dir).items()
    }
    assert results["wine"].promoted and results["wine"].test_metrics["accuracy"] > 0.9
    server = serve((settings, results), tmp_path)
    http, grpc = clients(server)
    try:
        reference = expected((settings, results), "wine", wine)
        records = wine.to_dict(orient="records")
        one = server.post("/predict/wine", json=records[0]).json()
        assert one["prediction"] == reference[0] and set(one["probabilities"]) == {
            "barolo", "grignolino", "barbera"
        }  # fmt: skip
        batch = server.post("/predict/wine/batch", json={"records": records}).json()
        answers = {"native": [p["prediction"] for p in batch["predictions"]]}
        for label, client, module in (("v2", http, triton_http), ("v2_grpc", grpc, triton_grpc)):
            tensor = module.InferInput("x", list(wine.shape), "FP64")
            tensor.set_data_from_numpy(wine.to_numpy())
            answers[label] = [
                v.decode() for v in client.infer("wine", [tensor]).as_numpy("predict")
            ]
        split = {"dataframe_split": wine.to_dict(orient="split")}
        answers["mlflow"] = server.post("/invocations", json=split).json()["predictions"]
        csv = wine.to_csv(index=False).encode()
        answers["mlflow csv"] = server.post(
            "/models/wine/invocations", data=csv, headers={"Content-Type": "text/csv"}
        ).json()["predictions"]
        assert answers == {label: reference for label in answers}

        explained = server.post("/explain/wine", json=records[0]).json()
        assert explained["prediction"] == reference[0]
        for cls, contributions in explained["contributions"].items():
            total = explained["base_value"][cls] + sum(contributions.values())
            assert total == pytest.approx(explained["output_value"][cls], abs=1e-9)
        meta = server.get("/v2/models/wine").json()
        assert [t["name"] for t in meta["inputs"]] == list(wine.columns)
        assert "/predict/wine/batch" in server.get("/openapi.json").json()["paths"]
        assert server.get("/models/wine").json()["registered_name"] == "WineCultivarModel"
    finally:
        server.stop()

"""Peers and load generators for `make bench`: Seldon MLServer on our champions, gRPC load.

MLServer 1.7 pins libraries this project does not use (FastAPI 0.115 among them), so it lives
in a virtual environment of its own, outside the repository where no linter walks it
(``~/.cache/prediction-service/mlserver-1.7.1``, made on first use from
``bench/requirements-mlserver.txt``). Our champions are exported to its runtimes: a bare
LightGBM model as the booster's text file (``mlserver_lightgbm``), anything else as a joblib
file (``mlserver_sklearn``). A pipeline with derived features (the housing champion) is the
latter, its derive step rebuilt from scikit-learn parts MLServer can import. Its default worker pool does not start on Python 3.11 here,
so it runs with ``parallel_workers: 0`` (requests answered in its main process, as ours are).

gRPC load comes from ``h2load`` (Debian's nghttp2-client): a C HTTP/2 client posting one
framed ``ModelInferRequest`` over and over. Python gRPC clients top out near 2,000 calls a
second on this machine, below what either server answers, so they would measure themselves.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MLSERVER_VENV = Path.home() / ".cache" / "prediction-service" / "mlserver-1.7.1"
MLSERVER_REQUIREMENTS = ROOT / "bench" / "requirements-mlserver.txt"
INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def mlserver_command() -> list[str]:
    """The ``mlserver`` executable of its own environment, made on first use."""
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", "-r", str(MLSERVER_REQUIREMENTS)],
            check=True,
        )
    return [str(exe)]


def export_for_mlserver(
    tracking_uri: str, artifact_root: Path, folder: Path, http_port: int, grpc_port: int
) -> None:
    """Each champion in an MLServer model repository under ``folder``."""
    import joblib

    from prediction_service.registry import Registry
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs

    registry = Registry(tracking_uri, artifact_root)
    specs = load_specs(Settings(home=ROOT).specs_path)
    for name, spec in specs.items():
        version = registry.champion_version(spec.registered_name)
        assert version, f"{spec.registered_name} has no champion"
        model = _builtin_only(registry.load_model(spec.registered_name, version))
        target = folder / name
        target.mkdir(parents=True)
        if hasattr(model, "booster_"):
            model.booster_.save_model(str(target / "model.txt"))
            implementation, uri = "mlserver_lightgbm.LightGBMModel", "./model.txt"
        else:
            joblib.dump(model, target / "model.joblib")
            implementation, uri = "mlserver_sklearn.SKLearnModel", "./model.joblib"
        (target / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": implementation,
                    "parameters": {"uri": uri, "version": version},
                }
            )
        )
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "http_port": http_port,
                "grpc_port": grpc_port,
                "parallel_workers": 0,
                "metrics_endpoint": None,
                "debug": False,
            }
        )
    )


def _builtin_only(model: Any) -> Any:
    """The model with our derived-features step (training/derive.py, which MLServer's
    environment cannot import) rebuilt from scikit-learn and numpy parts that compute the
    same columns: [X, X @ weights]. Anything else is returned as it is."""
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import FunctionTransformer

    steps = getattr(model, "steps", None)
    if not steps or type(steps[0][1]).__name__ != "LinearFeatures":
        return model
    weights = steps[0][1].weights_
    derive = FeatureUnion(
        [("features", FunctionTransformer()),
         ("derived", FunctionTransformer(np.dot, kw_args={"b": weights}))]
    )  # fmt: skip
    return Pipeline([("derive", derive.fit(np.zeros((1, weights.shape[0])))), *steps[1:]])


def v2_body(record: dict[str, float]) -> dict[str, Any]:
    """One row as one [1, F] FP64 tensor: the layout both servers take."""
    values = list(record.values())
    return {
        "inputs": [
            {"name": "input-0", "shape": [1, len(values)], "datatype": "FP64", "data": values}
        ]
    }


def grpc_frame(model: str, record: dict[str, float], outputs: list[str]) -> bytes:
    """A length-prefixed ``ModelInferRequest`` (typed FP64 contents), as gRPC sends it."""
    from prediction_service.protocols.v2_grpc import grpc_predict_v2_pb2 as pb

    values = list(record.values())
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, len(values)])
    tensor.contents.fp64_contents.extend(values)
    for name in outputs:
        request.outputs.add(name=name)
    payload = request.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def check_grpc(port: int, frame: bytes) -> None:
    """One real call: h2load counts HTTP 200s, and a failed gRPC call is an HTTP 200 too."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        channel.unary_unary(INFER_PATH)(frame[5:], timeout=10)  # raises on a gRPC error


def h2load(port: int, frame: bytes, connections: int, seconds: int) -> dict[str, float]:
    """Unary gRPC calls at ``connections`` concurrent streams for ``seconds``."""
    if not shutil.which("h2load"):
        raise RuntimeError("h2load is missing: apt-get install nghttp2-client")
    check_grpc(port, frame)
    body = Path(tempfile.mkstemp(suffix=".bin")[1])
    body.write_bytes(frame)
    try:
        out = subprocess.run(
            ["h2load", "-c", str(connections), "-m", "1", "-D", str(seconds), "--warm-up-time=1",
             "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
             f"http://127.0.0.1:{port}{INFER_PATH}"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        body.unlink()
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    assert done and rps and mean, out
    if int(done.group(3)):
        raise RuntimeError(f"gRPC load: {done.group(3)} failed requests\n{out}")
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}[mean.group(2)]
    return {"rps": float(rps.group(1)), "mean_ms": float(mean.group(1)) * unit}

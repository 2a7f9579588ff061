"""Tracing, exemplars and JSON logs in a running service, against a real OTLP receiver.

The server exports over OTLP/HTTP to ``tests/otlp.py``'s receiver, which decodes the
protobuf the SDK sends. A client's W3C ``traceparent`` is continued over HTTP and gRPC, the
trace id reaches the prediction log row and the exemplar in ``/metrics``, and a retrain
job's process continues the trace of the request that started it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import IRIS_RECORD
from tests.live import LiveServer, free_port
from tests.otlp import Receiver, Span, tree
from tests.test_lifecycle_live import AUTH, Trained, own_registry, wait_job

pytestmark = pytest.mark.live
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(
    trained: Trained, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("tracing")
    grpc_port = free_port()
    live = LiveServer(
        own_registry(trained, workdir), workdir / "server.log",
        args=("--log-level", "info", "--access-log"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
        PREDICT_LOG_FORMAT="json", PREDICT_GRPC_PORT=str(grpc_port),
        PREDICT_ADMIN_TOKEN=AUTH["Authorization"].split()[1],
    ).start()  # fmt: skip
    live.grpc_port = grpc_port  # type: ignore[attr-defined]
    yield live
    live.stop()


def _children(spans: list[Span], parent: Span) -> dict[str, Span]:
    return {s.name: s for s in spans if s.parent_id == parent.span_id}


def test_an_http_prediction_is_a_trace_from_the_client_to_its_log_row(
    server: LiveServer, receiver: Receiver
) -> None:
    trace_id, parent, header = _traceparent()
    r = server.post("/predict/iris", json=IRIS_RECORD, headers={"traceparent": header})
    assert r.status_code == 200, r.text
    answered = r.headers["traceparent"]
    assert answered.startswith(f"00-{trace_id}-") and answered.endswith("-01")

    spans = receiver.trace(trace_id, at_least=6)
    print(tree(spans))
    root = next(s for s in spans if s.parent_id == parent)
    assert root.name == "POST /predict/iris" and root.kind == 2  # SERVER
    assert answered.split("-")[2] == root.span_id
    assert root.attributes["http.response.status_code"] == 200
    assert root.service == "prediction-service"
    children = _children(spans, root)
    assert set(children) == {"decode", "predict", "log.enqueue", "encode"}
    predict = children["predict"].attributes
    assert predict["model.name"] == "iris" and predict["model.rows"] == 1
    assert predict["model.arm"] == "champion" and predict["model.version"]
    order = [children[n].start_ns for n in ("decode", "predict", "log.enqueue", "encode")]
    assert (
        order == sorted(order)
        and root.start_ns <= order[0]
        and children["encode"].end_ns <= root.end_ns
    )
    # The writer's insert is a trace of its own, linked to every request it carries.
    [insert] = receiver.linked_to(trace_id, root.span_id)
    assert insert.name == "prediction_log.insert" and insert.attributes["db.rows"] >= 1
    assert not any(s.name.endswith(("/ready", "/health", "/metrics")) for s in receiver.spans)

    rows = server.get("/predictions/history", params={"trace_id": trace_id}).json()["items"]
    assert [row["trace_id"] for row in rows] == [trace_id]
    assert rows[0]["id"] == r.json()["prediction_id"]
    assert server.get("/predictions/history", params={"trace_id": "x"}).status_code == 422


def test_a_grpc_call_continues_the_callers_trace(server: LiveServer, receiver: Receiver) -> None:
    from tritonclient.grpc import service_pb2 as pb  # the protocol's messages, Triton's copy

    trace_id, parent, header = _traceparent()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")  # type: ignore[attr-defined]
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    request = pb.ModelInferRequest(model_name="iris")
    for name, value in IRIS_RECORD.items():
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[1])
        tensor.contents.fp64_contents.append(value)
    reply, call = infer.with_call(request, metadata=[("traceparent", header)])
    channel.close()
    assert reply.model_name == "iris"
    answered = dict(call.initial_metadata())["traceparent"]
    assert answered.startswith(f"00-{trace_id}-")

    spans = receiver.trace(trace_id, at_least=6)
    print(tree(spans))
    root = next(s for s in spans if s.parent_id == parent)
    assert root.name == "inference.GRPCInferenceService/ModelInfer" and root.kind == 2
    assert root.attributes["rpc.system"] == "grpc" and root.attributes["rpc.grpc.status_code"] == 0
    children = _children(spans, root)
    assert set(children) == {"decode", "predict", "log.enqueue", "encode"}
    assert children["predict"].attributes["model.name"] == "iris"
    rows = server.get("/predictions/history", params={"trace_id": trace_id}).json()["items"]
    assert len(rows) == 1 and rows[0]["protocol"] == "v2_grpc"


def test_the_latency_histograms_carry_the_trace_as_an_exemplar(server: LiveServer) -> None:
    trace_id, _, header = _traceparent()
    assert server.post("/predict/iris", json=IRIS_RECORD, headers={"traceparent": header}).ok
    metrics = server.get("/metrics", headers={"Accept": OPENMETRICS})
    assert metrics.headers["content-type"].startswith("application/openmetrics-text")
    lines = [ln for ln in metrics.text.splitlines() if f'trace_id="{trace_id}"' in ln]
    print("\n".join(lines))
    names = {ln.split("{", 1)[0] for ln in lines}
    assert {"prediction_duration_seconds_bucket", "http_request_duration_seconds_bucket"} <= names
    plain = server.get("/metrics")  # what a scraper without exemplar storage asks for
    assert plain.headers["content-type"].startswith("text/plain") and "trace_id" not in plain.text


def test_every_log_line_is_json_with_its_request_and_trace(server: LiveServer) -> None:
    trace_id, _, header = _traceparent()
    r = server.post("/predict/iris", json=IRIS_RECORD, headers={"traceparent": header})
    time.sleep(0.2)
    lines = [ln for ln in server.output().splitlines() if ln.strip()]
    parsed = [json.loads(ln) for ln in lines]  # every line: a JSON object
    access = [
        p for p in parsed if p["logger"] == "uvicorn.access" and p.get("trace_id") == trace_id
    ]
    print(json.dumps(access[-1]))
    assert access[-1]["request_id"] == r.headers["x-request-id"]
    assert access[-1]["path"] == "/predict/iris" and access[-1]["status"] == 200
    assert {"time", "level", "logger", "message", "span_id"} <= set(access[-1])


def test_a_retrain_job_continues_the_trace_that_started_it(
    server: LiveServer, receiver: Receiver
) -> None:
    trace_id, parent, header = _traceparent()
    r = server.post(
        "/retrain", json={"model": "iris", "candidates": ["logistic_regression"]},
        headers={**AUTH, "traceparent": header},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    job = wait_job(server, r.json()["id"])
    assert job["status"] == "succeeded", job
    spans = receiver.trace(trace_id, at_least=3, timeout_s=30)
    print(tree(spans))
    root = next(s for s in spans if s.parent_id == parent)
    assert root.name == "POST /retrain"
    retrain = next(s for s in spans if s.name == "retrain")
    train = next(s for s in spans if s.name == "train")
    assert retrain.parent_id == root.span_id and train.parent_id == retrain.span_id
    assert retrain.attributes["retrain.job_id"] == train.attributes["retrain.job_id"] == job["id"]

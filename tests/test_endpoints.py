"""A protocol is one declaration: a new one is routed, documented, counted and logged with no
other file changed. In-process, with the app's real start-up (``with TestClient(app)``),
over the small models and a SQLite log of the test's own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from prediction_service import protocols
from prediction_service.access import AccessControl
from prediction_service.api import endpoints
from prediction_service.api.app import create_app
from prediction_service.api.grpc_server import peer_address
from prediction_service.errors import OverloadedError, ServiceError
from prediction_service.metrics import Metrics
from prediction_service.protocols.base import Call, Doc, Endpoint, Protocol, Reply
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.predictions import PredictionService
from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, small_settings

pytestmark = pytest.mark.unit

Small = tuple[Settings, dict[str, TrainingResult]]


# -- a whole protocol, as a user would add one: values in the spec's order, a bare answer --
class TinyAnswer(BaseModel):
    answer: float | str


class TinyError(BaseModel):
    oops: str


def tiny_predict(service: PredictionService, call: Call) -> Reply:
    X = service.codec(call.model).matrix([orjson.loads(call.body)])
    p = service.predict(call.model, X, "tiny", call.request_id)
    return Reply(orjson.dumps({"answer": p.values[0]}))


def tiny_body(codec: FeatureCodec | None) -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "array", "items": {"type": "number"}}}}


TINY = Protocol(
    name="tiny",
    error_body=lambda exc: {"oops": exc.message},
    error_model=TinyError,
    endpoints=(
        Endpoint(
            "/tiny/{model}",
            tiny_predict,
            Doc(
                "Predict one {model} row from its {n_features} values ({features})",
                tag="tiny",
                replies={200: TinyAnswer},
                errors=(404, 422),
                body=tiny_body,
                per_model=True,
            ),
            limit="record",
        ),
    ),
)


def test_a_new_protocol_is_routed_documented_counted_and_logged(
    small: Small, tmp_path: Path
) -> None:
    app = create_app(small_settings(small, tmp_path), served=[*protocols.HTTP, TINY])
    with TestClient(app) as client:
        r = client.post("/tiny/iris", json=list(IRIS_RECORD.values()))
        assert r.status_code == 200, r.text
        assert r.json() == {"answer": "setosa"}
        housing = client.post("/tiny/housing", json=list(HOUSING_RECORD.values()))
        assert housing.status_code == 200 and isinstance(housing.json()["answer"], float)
        # Its errors come in its own shape, with the domain error's status.
        bad = client.post("/tiny/iris", json=[5.1, 3.5, 1.4])
        assert bad.status_code == 422 and "4 values" in bad.json()["oops"]
        assert client.post("/tiny/wine", json=[1.0]).json() == {
            "oops": "unknown model 'wine'; known models: housing, iris"
        }
        wrong = client.get("/tiny/iris")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert "use POST" in wrong.json()["oops"]

        paths = client.get("/openapi.json").json()["paths"]
        operation = paths["/tiny/iris"]["post"]
        assert operation["summary"] == (
            "Predict one iris row from its 4 values (sepal_length, sepal_width, "
            "petal_length, petal_width)"
        )
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/TinyAnswer"
        }
        assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/TinyError"
        }
        assert "/tiny/housing" in paths and "/predict/iris" in paths  # beside the others

        metrics = client.get("/metrics").text
        assert 'http_requests_total{method="POST",route="/tiny/iris",status="200"} 1.0' in metrics
        assert 'predictions_total{model="iris",protocol="tiny",version="1"} 1.0' in metrics
        errors = 'prediction_errors_total{model="iris",protocol="tiny",reason="invalid_input"}'
        assert f"{errors} 1.0" in metrics
        assert (
            'prediction_errors_total{model="unknown",protocol="tiny",reason="unknown_model"} 1.0'
            in metrics
        )
    with sqlite3.connect(tmp_path / "predictions.db") as db:
        logged = db.execute(
            "SELECT model, protocol, COUNT(*) FROM predictions GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert logged == [("housing", "tiny", 1), ("iris", "tiny", 1)]


def test_an_endpoint_s_key_is_checked_before_its_body_is_read(small: Small, tmp_path: Path) -> None:
    """A request without a key is refused before its body is read: of a 64 MB body sent a
    chunk at a time, at most the first chunk is taken."""
    keys = '[{"name": "app", "key": "app-key-0123456789abcdef", "scopes": ["predict"]}]'
    app = create_app(small_settings(small, tmp_path, api_keys=keys))
    with TestClient(app) as client:
        reads = 0

        def chunks() -> Any:
            nonlocal reads
            for _ in range(64 * 1024):
                reads += 1
                yield b"[" * 1024

        r = client.post("/predict/iris", content=chunks())
        assert r.status_code == 401 and r.json() == {"detail": "missing bearer token"}
        assert reads <= 1  # the client's first chunk at most, never the body
        key = {"Authorization": "Bearer app-key-0123456789abcdef"}
        assert client.post("/predict/iris", json=IRIS_RECORD, headers=key).status_code == 200


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("ipv6:[fe80::1%25eth0]:80", "fe80::1%25eth0"),
        ("unix:/run/app.sock", "/run/app.sock"),
    ],
)
def test_grpc_peers_are_read_as_addresses(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_every_protocol_answers_a_domain_error_with_its_status() -> None:
    for protocol in protocols.HTTP:
        status, body = protocol.error(ServiceError("a reason"))
        assert status == 500 and "a reason" in orjson.dumps(body).decode()


def test_the_body_budget_holds_bodies_back_then_refuses_with_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What request bodies hold at once is bounded: a body that would pass the budget waits
    for room (one that was given back), and is refused 503 with Retry-After when none
    comes in time."""
    monkeypatch.setattr(endpoints, "BUDGET_WAIT_S", 0.2)
    budget = endpoints.BodyBudget(100)

    async def scenario() -> list[str]:
        seen = []
        await budget.take(60)
        waiting = asyncio.create_task(budget.take(60))
        await asyncio.sleep(0.05)
        seen.append(f"waiting {not waiting.done()}, used {budget.used}")
        budget.give(60)
        await waiting
        seen.append(f"taken after room was given, used {budget.used}")
        try:
            await budget.take(60)
        except OverloadedError as exc:
            seen.append(f"{exc.status_code} {exc.headers['Retry-After']}: {exc.message}")
        with pytest.raises(OverloadedError, match="cannot be held"):
            await budget.take(101)
        return seen

    assert asyncio.run(scenario()) == [
        "waiting True, used 60",
        "taken after room was given, used 60",
        "503 1: too many large request bodies at once; retry shortly",
    ]


def test_a_request_cut_short_by_the_shutdown_is_answered_in_its_protocol_s_shape() -> None:
    """uvicorn cancels what is still running when the graceful shutdown runs out; the
    client gets a 503 in its protocol's shape, not uvicorn's plain-text 500."""

    def slow(service: PredictionService, call: Call) -> Reply:
        time.sleep(0.5)
        return Reply(b"{}")

    tiny = Protocol("tiny", (Endpoint("/slow", slow, inline=False, scope=None),),
                    TINY.error_body, TinyError)  # fmt: skip
    router = endpoints.EndpointRouter(
        app=None,  # type: ignore[arg-type]
        protocols=[tiny],
        service=SimpleNamespace(codecs={}),  # type: ignore[arg-type]
        access=AccessControl([], "30/minute", Metrics()),
        metrics=Metrics(),
        max_body=1024,
        budget=endpoints.BodyBudget(1024),
        route_scope=lambda scope: None,
    )
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/slow", "headers": []}
        task = asyncio.create_task(router(scope, receive, send))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"]) == {
        "oops": "the service stopped before this request was answered"
    }

"""The prediction lanes: every protocol's prediction route, answered in front of FastAPI.

``POST /predict/<model>[/batch]`` (native), ``/v2/models/<model>[/versions/<v>]/infer``
(Open Inference Protocol) and ``/invocations``, ``/models/<model>/invocations`` (MLflow) are
plain ASGI here: read the body (bounded), let the protocol decode it into the model's
feature matrix, predict, encode. Measured in-process on this machine (bench/profile_request.py
and a throw-away script), a FastAPI route costs about 230 us a request before its endpoint
runs, a raw route at the head of Starlette's router about 27 us, while a model answers one
row in 20-40 us; so the lanes sit in front of FastAPI, which serves everything else.

OpenAPI still documents these routes (``api/openapi.py``), and errors come out in each
protocol's own shape with the status the domain error carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_service.api.errors import error_reply
from prediction_service.errors import BatchTooLargeError, MethodNotAllowedError, ServiceError
from prediction_service.protocols import mlflow, native, v2
from prediction_service.services import Services
from prediction_service.serving.service import EXPLAIN

log = logging.getLogger(__name__)

SINGLE_BODY = 64 * 1024
# Bodies up to this size are decoded and predicted on the event loop; larger ones (batches)
# in a worker thread, so a big batch never stalls the single-row requests behind it.
INLINE_BODY = 16 * 1024
_JSON = (b"content-type", b"application/json")


_OPEN = "<predict scope open>"


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str | None
    request_id: str | None
    header_length: str | None  # V2 binary extension: the JSON part's length
    authorization: str | None = _OPEN  # _OPEN: the predict scope needs no key
    client: str | None = None


@dataclass(frozen=True)
class Reply:
    body: bytes
    headers: list[tuple[bytes, bytes]]
    status: int = 200


Handler = Callable[[Services, "Lane", Request], Reply]


@dataclass(frozen=True)
class Lane:
    path: str  # the route template, as the HTTP metrics label it
    protocol: str
    handler: Handler
    model: str | None = None
    version: str | None = None
    max_body: int = SINGLE_BODY
    # Small bodies are answered on the event loop; explanations never are (TreeSHAP over a
    # 600-tree forest takes milliseconds a row, which would hold every other request).
    inline: bool = True


# -- handlers: decode, predict, encode ------------------------------------------------
def native_one(services: Services, lane: Lane, request: Request) -> Reply:
    model = lane.model or ""
    X = native.decode_one(services.codec(model), request.body, request.content_type)
    p = services.predictions.predict(model, X, native.PROTOCOL, request.request_id)
    return Reply(native.encode_one(p), [_JSON])


def native_batch(services: Services, lane: Lane, request: Request) -> Reply:
    model = lane.model or ""
    X = native.decode_batch(services.codec(model), request.body, request.content_type)
    p = services.predictions.predict(model, X, native.PROTOCOL, request.request_id)
    return Reply(native.encode_batch(p), [_JSON])


def _explain(decode: Callable[..., Any], encode: Callable[..., bytes]) -> Handler:
    """The native lanes' bodies, answered with the champion's exact contributions."""

    def handler(services: Services, lane: Lane, request: Request) -> Reply:
        model = lane.model or ""
        codec = services.codec(model)
        X = decode(codec, request.body, request.content_type)
        p, contributions = services.predictions.explain(model, X, request.request_id)
        return Reply(encode(p, contributions, codec.spec.model_feature_names), [_JSON])

    return handler


explain_one = _explain(native.decode_one, native.encode_explanation)
explain_batch = _explain(native.decode_batch, native.encode_explanations)


def v2_infer(services: Services, lane: Lane, request: Request) -> Reply:
    model = lane.model or ""
    codec = services.codec(model)
    length = v2.header_length(request.header_length)
    if length is None:  # a binary body is application/octet-stream
        native.check_json(request.content_type)
    infer = v2.decode_rest(request.body, length)
    v2.check_outputs(codec.spec, None if infer.outputs is None else list(infer.outputs))
    X = v2.features(codec, infer.inputs)
    request_id = request.request_id or infer.id
    p = services.predictions.predict(model, X, v2.PROTOCOL, request_id, lane.version)
    body, header_length = v2.encode_rest(p, infer)
    headers = [_JSON]
    if header_length is not None:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (v2.HEADER_LENGTH.encode(), str(header_length).encode()),
        ]
    return Reply(body, headers)


def mlflow_invocations(services: Services, lane: Lane, request: Request) -> Reply:
    payload = mlflow.decode(request.body, request.content_type)
    model = lane.model or mlflow.choose_model(payload, services.codecs)
    X = mlflow.features(services.codec(model), payload)
    p = services.predictions.predict(model, X, mlflow.PROTOCOL, request.request_id)
    return Reply(mlflow.encode(p), [_JSON])


class PredictionLanes:
    """ASGI middleware: serves the lanes, hands every other request to ``app``."""

    def __init__(self, app: ASGIApp, services: Services, max_body: int) -> None:
        self.app = app
        self.services = services
        self.max_body = max_body
        self._exact: dict[str, Lane] = {"/invocations": self._mlflow(None)}
        for name in services.specs:
            self._exact[f"/predict/{name}"] = Lane(f"/predict/{name}", "native", native_one, name)
            self._exact[f"/predict/{name}/batch"] = Lane(
                f"/predict/{name}/batch", "native", native_batch, name, max_body=max_body
            )
            self._exact[f"/explain/{name}"] = Lane(
                f"/explain/{name}", EXPLAIN, explain_one, name, inline=False
            )
            self._exact[f"/explain/{name}/batch"] = Lane(
                f"/explain/{name}/batch",
                EXPLAIN,
                explain_batch,
                name,
                max_body=max_body,
                inline=False,
            )
            self._exact[f"/v2/models/{name}/infer"] = self._v2(name, None)
            self._exact[f"/models/{name}/invocations"] = self._mlflow(name)

    def _v2(self, model: str, version: str | None) -> Lane:
        path = (
            "/v2/models/{model}/versions/{version}/infer" if version else "/v2/models/{model}/infer"
        )
        return Lane(path, v2.PROTOCOL, v2_infer, model, version, self.max_body)

    def _mlflow(self, model: str | None) -> Lane:
        path = "/models/{model}/invocations" if model else "/invocations"
        return Lane(path, mlflow.PROTOCOL, mlflow_invocations, model, max_body=self.max_body)

    def lane(self, path: str) -> Lane | None:
        """The lane of a POST to ``path``: exact paths first, then the templated ones (a
        version, or a model this service does not have, which its handler answers 404)."""
        lane = self._exact.get(path)
        if lane is not None:
            return lane
        parts = path.split("/")
        if len(parts) in (3, 4) and parts[1] == "predict" and parts[2]:
            if len(parts) == 3:
                return Lane("/predict/{model}", "native", native_one, parts[2])
            if parts[3] == "batch":
                return Lane("/predict/{model}/batch", "native", native_batch, parts[2])
        if len(parts) in (3, 4) and parts[1] == "explain" and parts[2]:
            if len(parts) == 3:
                return Lane("/explain/{model}", EXPLAIN, explain_one, parts[2], inline=False)
            if parts[3] == "batch":
                return Lane(
                    "/explain/{model}/batch", EXPLAIN, explain_batch, parts[2], inline=False
                )
        if len(parts) >= 5 and parts[1:3] == ["v2", "models"] and parts[-1] == "infer":
            if len(parts) == 5:
                return self._v2(parts[3], None)
            if len(parts) == 7 and parts[4] == "versions":
                return self._v2(parts[3], parts[5])
        if len(parts) == 4 and parts[1] == "models" and parts[3] == "invocations":
            return self._mlflow(parts[2])
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == "http"
        lane = self.lane(scope["path"]) if http else None
        if lane is None:
            await self.app(scope, receive, self._allow(scope, send) if http else send)
            return
        if scope["method"] != "POST":
            await _method_not_allowed(lane, scope, send)
            return
        scope["route"] = lane  # labels the request in the HTTP metrics
        body = await _read(receive, lane.max_body)
        if body is None:
            return  # the client went away
        if body is _TOO_LARGE:
            limit = lane.max_body
            reply = self._error(
                lane, BatchTooLargeError(f"request body exceeds the limit of {limit} bytes")
            )
        else:
            request = _request(scope, body, self.services.access.is_open("predict"))
            if len(body) <= INLINE_BODY and lane.inline:
                reply = self.answer(lane, request)
            else:
                reply = await run_in_threadpool(self.answer, lane, request)
        # A length, not chunked framing: one less thing for the server to frame and every
        # client to parse.
        headers = [*reply.headers, (b"content-length", b"%d" % len(reply.body))]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    def _allow(self, scope: Scope, send: Send) -> Send:
        """Starlette's 405 lists only the first route that matched the path; list them all."""

        async def send_allow(message: Message) -> None:
            # Starlette puts itself in the scope on its way to the router that answered 405.
            if message["type"] == "http.response.start" and message["status"] == 405:
                routes = scope["app"].routes
                methods = [m for m in _METHODS if any(_matches(r, scope, m) for r in routes)]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"allow"]
                message["headers"] = [*headers, (b"allow", ", ".join(methods).encode())]
            await send(message)

        return send_allow

    def answer(self, lane: Lane, request: Request) -> Reply:
        try:
            if request.authorization is not _OPEN:
                self.services.access.check("predict", request.authorization, request.client)
            return lane.handler(self.services, lane, request)
        except ServiceError as exc:
            return self._error(lane, exc)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            log.exception("unexpected error on %s", lane.path)
            return self._error(lane, ServiceError("internal server error"))

    def _error(self, lane: Lane, exc: ServiceError) -> Reply:
        self._count_error(lane, exc.reason)
        status, body = error_reply(lane.protocol, exc)
        headers = [_JSON, *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
        return Reply(orjson.dumps(body), headers, status)

    def _count_error(self, lane: Lane, reason: str) -> None:
        model = lane.model if lane.model in self.services.specs else "unknown"
        self.services.metrics.prediction_errors.labels(model, reason, lane.protocol).inc()


def _request(scope: Scope, body: bytes, open_: bool) -> Request:
    content_type = header_length = None
    authorization: str | None = _OPEN if open_ else None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"inference-header-content-length":
            header_length = value.decode("latin-1")
        elif name == b"authorization" and not open_:
            authorization = value.decode("latin-1")
    client = scope.get("client")
    # The request id was checked, or made when the client sent none, by the outer middleware.
    return Request(
        body, content_type, scope.get("request_id"), header_length, authorization,
        client[0] if client else None,
    )  # fmt: skip


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _matches(route: Any, scope: Scope, method: str) -> bool:
    match, _ = route.matches({**scope, "method": method})
    return bool(match == Match.FULL)


async def _method_not_allowed(lane: Lane, scope: Scope, send: Send) -> None:
    scope["route"] = lane
    status, body = error_reply(lane.protocol, MethodNotAllowedError(scope["method"]))
    headers = [_JSON, (b"allow", b"POST")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


_TOO_LARGE = b"<too large>"


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The body; ``_TOO_LARGE`` as soon as it passes ``limit`` bytes (the rest is never read),
    None when the client disconnects."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)

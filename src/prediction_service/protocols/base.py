"""What a protocol declares: its endpoints, its error shape and its documentation.

A protocol is one module that builds one ``Protocol`` value; ``protocols/__init__.py``
registers it. Everything else is generated from the declarations: the fast router in front
of FastAPI (``api/endpoints.py``), the gRPC server (``api/grpc_server.py``), the OpenAPI
operations (``api/openapi.py``), the error replies and the metrics labels. A handler only
decodes a ``Call`` into the model's feature matrix, calls the prediction service, and encodes
the typed result; it never sees the transport.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from anyio.to_thread import run_sync
from pydantic import BaseModel

from prediction_service.errors import ServiceError
from prediction_service.serving.batching import Steps, finish, run
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.predictions import PredictionService

JSON_CONTENT = (b"content-type", b"application/json")
MAX_REQUEST_ID = 128


def request_id_problem(value: bytes) -> str | None:
    """Why a client's request id (``X-Request-ID``, a gRPC request's ``id``) is refused, or
    None when it is fine: 1 to 128 printable ASCII characters, no spaces."""
    if not 0 < len(value) <= MAX_REQUEST_ID:
        return f"request id must be 1 to {MAX_REQUEST_ID} characters, not {len(value)}"
    if not all(0x21 <= c <= 0x7E for c in value):
        return "request id must be printable ASCII without spaces"
    return None


@dataclass(slots=True)
class Call:
    """One request, as every protocol sees it. A handler that finds the model in the body
    (gRPC, where it is a field of the message) records it in ``params``."""

    params: dict[str, str]  # path parameters ({model}, {version})
    body: bytes
    content_type: str | None = None
    request_id: str | None = None  # checked (or made) by the transport
    headers: Sequence[tuple[bytes, bytes]] = ()  # lower-case names, as ASGI gives them

    @property
    def model(self) -> str:
        return self.params.get("model", "")

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(slots=True)
class Reply:
    body: bytes
    headers: Sequence[tuple[bytes, bytes]] = (JSON_CONTENT,)
    status: int = 200


# A handler answers at once, or (one that predicts) is a generator of steps: it yields a
# ``ModelCall`` when its version batches, and returns its reply (serving/batching.py).
Handler = Callable[[PredictionService, Call], "Reply | Steps[Reply]"]


@dataclass(frozen=True)
class Doc:
    """An endpoint's OpenAPI operation. Texts may name ``{model}``, ``{features}`` (the
    model's feature names), ``{limit}`` (the batch row limit) and ``{description}`` (the
    spec's); an endpoint whose ``body`` depends on the model is documented once per model."""

    summary: str
    tag: str
    replies: Mapping[int, type[BaseModel] | None]  # status -> body model (None: no schema)
    errors: tuple[int, ...] = ()
    description: str = ""
    # The request body's content, given the model's codec when documented per model (None
    # for an endpoint without a body).
    body: Callable[[FeatureCodec | None], dict[str, Any]] | None = None
    per_model: bool = False
    # Models the body refers to (``#/components/schemas/...``), likewise.
    schemas: Callable[[FeatureCodec | None], Sequence[type[BaseModel]]] = lambda codec: ()
    reply_media: str = "application/json"


Limit = Literal["record", "batch"]


@dataclass(frozen=True)
class Endpoint:
    """One route of a protocol: ``method path`` over HTTP, or a gRPC method's full name."""

    path: str  # a template: "/predict/{model}", "/inference.GRPCInferenceService/ModelInfer"
    handle: Handler
    doc: Doc | None = None  # None: not in the OpenAPI document (gRPC methods)
    method: str = "POST"
    # Which body limit applies: one record's (small), or a batch's (PREDICT_MAX_BODY_BYTES).
    limit: Limit = "batch"
    # Small bodies are answered on the event loop; False: always in a worker thread
    # (explanations: TreeSHAP over a 600-tree forest takes milliseconds a row).
    inline: bool = True
    # The access scope a caller's key must grant, checked before the body is read.
    scope: str | None = "predict"
    # Whether calls are predictions (counted by model, reason and protocol when they fail).
    predicts: bool = True
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"{(\w+)}", self.path)  # literal, name, literal, ... literal
        regex = "".join(
            re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts)
        )
        object.__setattr__(self, "params", tuple(parts[1::2]))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        return found.groupdict() if found else None

    def label(self, params: Mapping[str, str], known_models: Collection[str]) -> str:
        """The route's metrics label: the template with a known model filled in (models are
        few; versions and unknown names are not)."""
        model = params.get("model")
        if model is not None and model in known_models:
            return self.path.replace("{model}", model)
        return self.path


# Bodies up to this size are decoded and predicted on the event loop; larger ones (batches)
# in a worker thread, so a big batch never stalls the single-row requests behind it.
INLINE_BODY = 16 * 1024


def start(endpoint: Endpoint, service: PredictionService, call: Call) -> Reply | Awaitable[Reply]:
    """``endpoint``'s reply to ``call`` when it is made at once on the event loop (a small
    body, a version that does not batch), else an awaitable of it: a worker thread's work
    for a large body, or the rest of the handler after its batched model call. Errors raise
    as the handler raised them; the transport answers them in the protocol's shape."""
    if len(call.body) > INLINE_BODY or not endpoint.inline:
        return run_sync(answer_here, endpoint.handle, service, call)
    result = endpoint.handle(service, call)
    if type(result) is Reply:
        return result
    steps: Steps[Reply] = result  # type: ignore[assignment]
    try:
        first = next(steps)
    except StopIteration as stop:
        return stop.value
    return finish(steps, first)


async def answer(endpoint: Endpoint, service: PredictionService, call: Call) -> Reply:
    """``endpoint``'s reply to ``call``, whichever transport it came by (``start``, awaited)."""
    result = start(endpoint, service, call)
    return result if type(result) is Reply else await result  # type: ignore[misc]


def answer_here(handle: Handler, service: PredictionService, call: Call) -> Reply:
    """``handle``'s reply, made in this thread (a worker's: model calls go straight in)."""
    result = handle(service, call)
    return result if type(result) is Reply else run(result)  # type: ignore[arg-type]


def default_status(exc: ServiceError) -> int:
    return exc.status_code


@dataclass(frozen=True)
class Protocol:
    """A protocol: its endpoints, and how it answers an error."""

    name: str  # the label on metrics and prediction-log rows: native, v2, mlflow, ...
    endpoints: tuple[Endpoint, ...]
    error_body: Callable[[ServiceError], dict[str, Any]]
    error_model: type[BaseModel]  # documents error_body in OpenAPI
    status_of: Callable[[ServiceError], int] = default_status
    # Paths under this prefix that match no endpoint are answered in this protocol's shape.
    prefix: str | None = None
    transport: Literal["http", "grpc"] = "http"

    def error(self, exc: ServiceError) -> tuple[int, dict[str, Any]]:
        """The status and body that answer ``exc``."""
        return self.status_of(exc), self.error_body(exc)

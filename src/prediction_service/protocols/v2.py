"""The Open Inference Protocol ("V2": KServe, Triton, Seldon MLServer), transport-independent.

A request carries tensors; either one tensor per feature (named as in the spec, shape ``[N]``
or ``[N, 1]``) or one ``[N, F]`` tensor in the spec's feature order. Numeric types only
(``FP16/32/64``, ``INT8..64``, ``UINT8..64``); integer features take integer values.
Outputs: ``predict`` (the value, or the class name as ``BYTES`` for classifiers),
``predict_proba`` (``[N, classes]``, classifiers only) and ``prediction_id`` (``BYTES``, for
``POST /feedback``). REST requests may use Triton's binary tensor extension
(``Inference-Header-Content-Length``), which ``tritonclient.http`` sends by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from prediction_service import __version__
from prediction_service.errors import InvalidInputError, ServiceError
from prediction_service.protocols import native
from prediction_service.protocols.base import Call, Doc, Endpoint, Handler, Protocol, Reply
from prediction_service.serving.batching import Steps
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.model_store import ModelStore
from prediction_service.serving.predictions import Prediction, PredictionService
from prediction_service.specs import ModelSpec

NAME = "v2"
SERVER_NAME = "prediction-service"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"
_HEADER_LENGTH = HEADER_LENGTH.encode()

NUMERIC: dict[str, np.dtype[Any]] = {
    name: np.dtype(kind).newbyteorder("<")
    for name, kind in {
        "FP16": "f2", "FP32": "f4", "FP64": "f8",
        "INT8": "i1", "INT16": "i2", "INT32": "i4", "INT64": "i8",
        "UINT8": "u1", "UINT16": "u2", "UINT32": "u4", "UINT64": "u8",
    }.items()
}  # fmt: skip
DATATYPES = (*NUMERIC, "BOOL", "BYTES")
_JSON_FLOAT = frozenset({float, int})
_JSON_INT = frozenset({int})


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # shaped as ``shape``


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # FP64 or BYTES
    shape: tuple[int, ...]
    values: np.ndarray | list[str]  # FP64: an array; BYTES: strings, flat, row-major

    def as_bytes(self) -> bytes:
        """The raw (binary) form: little-endian numbers, or 4-byte-length-prefixed strings."""
        if isinstance(self.values, np.ndarray):
            return np.ascontiguousarray(self.values, dtype="<f8").tobytes()
        parts = []
        for s in self.values:
            b = s.encode()
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)

    def as_list(self) -> list[Any]:
        if isinstance(self.values, np.ndarray):
            return list(self.values.reshape(-1).tolist())
        return list(self.values)


@dataclass
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    # name -> wants binary; None: every output, binary when ``binary_output``
    outputs: dict[str, bool] | None = None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def bad(message: str) -> InvalidInputError:
    return InvalidInputError(f"invalid input: {message}")


# -- tensors -> features -------------------------------------------------------------
def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) > 2:
        raise bad(
            f"input {name!r}: shape has {len(shape)} dimensions; a feature tensor has one "
            "([N]) or two ([N, F] or [N, 1])"
        )
    return tuple(shape)


def check_datatype(name: str, datatype: Any) -> np.dtype[Any]:
    dtype = NUMERIC.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise bad(
            f"input {name!r}: datatype {datatype!r} is not accepted; features are numbers "
            f"({', '.join(NUMERIC)})"
        )
    return dtype


def tensor_from_buffer(name: str, datatype: Any, shape: Any, raw: bytes) -> Tensor:
    dtype, dims = check_datatype(name, datatype), check_shape(name, shape)
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise bad(
            f"input {name!r}: {len(raw)} bytes of data for shape {list(dims)} of {datatype} "
            f"({expected} expected)"
        )
    return Tensor(name, datatype, dims, np.frombuffer(raw, dtype=dtype).reshape(dims))


def tensor_from_values(name: str, datatype: Any, shape: Any, values: Any) -> Tensor:
    """A tensor from JSON (or protobuf) values: flat or nested, in row-major order."""
    dtype, dims = check_datatype(name, datatype), check_shape(name, shape)
    flat = _flatten(values)
    if len(flat) != math.prod(dims):
        raise bad(f"input {name!r}: {len(flat)} values for shape {list(dims)}")
    allowed = _JSON_FLOAT if dtype.kind == "f" else _JSON_INT
    if not set(map(type, flat)) <= allowed:
        kind = "numbers" if dtype.kind == "f" else "integers"
        raise bad(f"input {name!r}: {datatype} data must be {kind}")
    try:
        data = np.array(flat, dtype=np.float64 if dtype.kind == "f" else np.int64)
    except OverflowError:
        raise bad(f"input {name!r}: a value is out of range for {datatype}") from None
    return Tensor(name, datatype, dims, data.reshape(dims))


def _flatten(values: Any) -> list[Any]:
    """Nested lists in row-major order, without recursion (JSON may nest a thousand deep)."""
    if not isinstance(values, list):
        return [values]
    if not any(isinstance(v, list) for v in values):
        return values
    flat: list[Any] = []
    stack = [iter(values)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


def _where(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2:
        return f"inputs.{loc[1]}[{loc[0]}]"
    return "inputs" + "".join(f"[{p}]" for p in loc)


def check_inputs(codec: FeatureCodec, count: int) -> None:
    """One input per feature, or one for all: more than the features are refused unread."""
    if count == 0:
        raise bad("the request has no inputs")
    if count > len(codec.names):
        raise bad(
            f"{count} inputs for {len(codec.names)} features: send one input per feature "
            f"({', '.join(codec.names)}), or one [N, {len(codec.names)}] tensor"
        )


def features(codec: FeatureCodec, inputs: Sequence[Tensor]) -> np.ndarray:
    """The feature matrix the request's tensors describe."""
    check_inputs(codec, len(inputs))
    names = codec.names
    if len(inputs) == 1 and (inputs[0].name not in names or len(names) == 1):
        t = inputs[0]
        if t.data.ndim == 2 and t.shape[1] == len(names):
            return codec.matrix(t.data, where=_where)
        if len(names) > 1 or t.data.ndim > 2:
            raise bad(
                f"input {t.name!r}: one tensor must have shape [N, {len(names)}] "
                f"(features {', '.join(names)}); or send one input per feature"
            )
    columns: dict[str, np.ndarray] = {}
    for t in inputs:
        if t.data.ndim not in (1, 2) or (t.data.ndim == 2 and t.shape[1] != 1):
            raise bad(f"input {t.name!r}: a feature's tensor has shape [N] or [N, 1]")
        if t.name in columns:
            raise bad(f"input {t.name!r} is given twice")
        columns[t.name] = t.data.reshape(-1)
    return codec.columns(columns, where=_where)


# -- prediction -> tensors -----------------------------------------------------------
def output_names(spec: ModelSpec) -> list[str]:
    if spec.task == "classification":
        return ["predict", "predict_proba", "prediction_id"]
    return ["predict", "prediction_id"]


def outputs(p: Prediction, wanted: Sequence[str] | None = None) -> list[OutputTensor]:
    n = len(p)
    out: list[OutputTensor] = []
    if p.classes is None:
        out.append(OutputTensor("predict", "FP64", (n,), np.asarray(p.values, dtype=np.float64)))
    else:
        out.append(OutputTensor("predict", "BYTES", (n,), [str(v) for v in p.values]))
        if p.probabilities is not None:
            proba = p.probabilities
            out.append(OutputTensor("predict_proba", "FP64", (n, proba.shape[1]), proba))
    out.append(OutputTensor("prediction_id", "BYTES", (n,), p.ids))
    if wanted is None:
        return out
    by_name = {o.name: o for o in out}
    return [by_name[name] for name in wanted]


def check_outputs(spec: ModelSpec, wanted: Sequence[str] | None) -> None:
    if wanted is None:
        return
    known = output_names(spec)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise bad(f"unknown output {unknown[0]!r}; {spec.name} has outputs {known}")


def response_parameters(p: Prediction) -> dict[str, Any]:
    return {"registered_name": p.registered_name, "latency_ms": p.latency_ms}


# -- REST encoding --------------------------------------------------------------------
def header_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad(f"{HEADER_LENGTH} must be an integer, not {raw[:40]!r}") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a JSON object (an absent one is empty)."""
    if value is None:
        return {}
    if type(value) is not dict:
        raise bad(f"{where} must be an object")
    return value


def _name(entry: Any, where: str) -> str:
    if type(entry) is not dict or type(entry.get("name")) is not str:
        raise bad(f"{where} must be an object with a name")
    return str(entry["name"])


def decode_rest(body: bytes, header_length: int | None) -> InferRequest:
    """A REST infer body: JSON, or JSON followed by binary tensor data."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise bad(f"{HEADER_LENGTH} {header_length} is outside the body of {len(body)} bytes")
    head = body if header_length is None else body[:header_length]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise bad(f"the body is not valid JSON: {exc}") from None
    if type(doc) is not dict or type(doc.get("inputs")) is not list:
        raise bad('the body must be a JSON object with an "inputs" list')
    params = _object(doc.get("parameters"), '"parameters"')
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise bad('"id" must be a string')
    binary = memoryview(body)[len(head) :]
    offset = 0
    tensors = []
    for i, inp in enumerate(doc["inputs"]):
        name = _name(inp, f"inputs[{i}]")
        size = _object(inp.get("parameters"), f"input {name!r}: parameters").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise bad(f"input {name!r}: binary_data_size {size!r} exceeds the binary data")
            raw = bytes(binary[offset : offset + size])
            offset += size
            tensors.append(tensor_from_buffer(name, inp.get("datatype"), inp.get("shape"), raw))
        elif "data" in inp:
            tensors.append(
                tensor_from_values(name, inp.get("datatype"), inp.get("shape"), inp["data"])
            )
        else:
            raise bad(f"input {name!r} has no data")
    if offset != len(binary):
        raise bad(f"{len(binary) - offset} bytes of binary data belong to no input")
    wanted = None
    if doc.get("outputs") is not None:
        if type(doc["outputs"]) is not list:
            raise bad('"outputs" must be a list')
        wanted = {}
        for i, out in enumerate(doc["outputs"]):
            name = _name(out, f"outputs[{i}]")
            options = _object(out.get("parameters"), f"output {name!r}: parameters")
            wanted[name] = options.get("binary_data") is True
    return InferRequest(
        inputs=tensors,
        id=request_id,
        outputs=wanted,
        binary_output=params.get("binary_data_output") is True,
        parameters=params,
    )


def encode_rest(p: Prediction, request: InferRequest) -> tuple[bytes, int | None]:
    """The JSON response, with binary outputs appended; and the JSON part's length when any."""
    wanted = None if request.outputs is None else list(request.outputs)
    tensors = outputs(p, wanted)
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for t in tensors:
        binary = request.binary_output if request.outputs is None else request.outputs[t.name]
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if binary:
            blob = t.as_bytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = t.as_list()
        described.append(entry)
    doc: dict[str, Any] = {"model_name": p.model, "model_version": p.version}
    if request.id is not None:
        doc["id"] = request.id
    doc["parameters"] = response_parameters(p)
    doc["outputs"] = described
    head = orjson.dumps(doc)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def error_body(exc: ServiceError) -> dict[str, Any]:
    return {"error": exc.message}


def status_of(exc: ServiceError) -> int:
    """The protocol answers a request it cannot use with 400 (Triton and KServe do)."""
    return 400 if exc.status_code == 422 else exc.status_code


# -- metadata ----------------------------------------------------------------------------
class V2Error(native.Wire):
    error: str


class V2Live(native.Wire):
    live: bool


class V2Ready(native.Wire):
    ready: bool


class V2ModelReady(native.Wire):
    name: str
    ready: bool


class V2ServerMetadata(native.Wire):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(native.Wire):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(native.Wire):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] | None = None


def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


def served_versions(store: ModelStore, name: str) -> list[str]:
    """The champion first, then the challenger; empty while nothing is loaded."""
    champion = store.loaded(name)
    challenger, _ = store.challenger(name)
    return [m.version for m in (champion, challenger) if m is not None]


def model_metadata(store: ModelStore, name: str, version: str | None = None) -> V2ModelMetadata:
    spec = store.spec(name)
    model = store.get(name) if version is None else store.served(name, version)
    tensor = V2TensorMetadata
    inputs = [
        tensor(name=f.name, datatype="INT64" if f.type == "int" else "FP64", shape=[-1])
        for f in spec.features
    ]
    outs: list[V2TensorMetadata] = []
    if spec.task == "classification":
        n_classes = len(spec.target.classes or ())
        outs.append(tensor(name="predict", datatype="BYTES", shape=[-1]))
        outs.append(tensor(name="predict_proba", datatype="FP64", shape=[-1, n_classes]))
    else:
        outs.append(tensor(name="predict", datatype="FP64", shape=[-1]))
    outs.append(tensor(name="prediction_id", datatype="BYTES", shape=[-1]))
    return V2ModelMetadata(
        name=name,
        versions=served_versions(store, name) if version is None else [model.version],
        platform=f"{SERVER_NAME}/{model.predictor_kind}",
        inputs=inputs,
        outputs=outs,
        parameters={
            "registered_name": spec.registered_name,
            "task": spec.task,
            "content_type": "one input per feature, or one [N, "
            f"{len(spec.features)}] tensor in this order",
        },
    )


def model_ready(store: ModelStore, name: str, version: str | None = None) -> bool:
    """Whether the model (or that served version) answers; a version it does not serve is
    not found, not unready."""
    store.spec(name)
    if version is None:
        return store.loaded(name) is not None
    if store.loaded(name) is not None:
        store.served(name, version)  # NotFoundError naming what is served
    return version in served_versions(store, name)


# -- wire schemas of inference (documentation; decoding is by hand, above) -----------------
class V2InputTensor(native.Wire):
    name: str = Field(description="a feature's name, or any name for one [N, F] tensor")
    shape: list[int] = Field(examples=[[1]])
    datatype: str = Field(examples=["FP64"], description="FP16/32/64, INT8..64 or UINT8..64")
    parameters: dict[str, Any] | None = Field(
        default=None, description='{"binary_data_size": n} when the data follows the JSON'
    )
    data: list[Any] | None = Field(default=None, description="values, flat or nested, row-major")


class V2RequestedOutput(native.Wire):
    name: str = Field(description="predict, predict_proba (classifiers) or prediction_id")
    parameters: dict[str, Any] | None = Field(default=None, examples=[{"binary_data": False}])


class V2InferRequest(native.Wire):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description='{"binary_data_output": true} for binary outputs'
    )
    inputs: list[V2InputTensor]
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(native.Wire):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2InferResponse(native.Wire):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2OutputTensor]


# -- the endpoints -------------------------------------------------------------------------
def infer(service: PredictionService, call: Call) -> Steps[Reply]:
    codec = service.codec(call.model)
    length = header_length(call.header(_HEADER_LENGTH))
    if length is None:  # a binary body is application/octet-stream
        native.check_json(call.content_type)
    codec.check_size(call.body if length is None else call.body[:length])
    request = decode_rest(call.body, length)
    check_outputs(codec.spec, None if request.outputs is None else list(request.outputs))
    X = features(codec, request.inputs)
    p = yield from service.predicting(
        call.model, X, NAME, call.request_id, call.params.get("version")
    )
    body, json_length = encode_rest(p, request)
    if json_length is None:
        return Reply(body)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (_HEADER_LENGTH, str(json_length).encode()),
    ]
    return Reply(body, headers)


def _json(value: native.Wire, status: int = 200) -> Reply:
    return Reply(orjson.dumps(value.model_dump()), status=status)


def _server_metadata(service: PredictionService, call: Call) -> Reply:
    return _json(server_metadata())


def _live(service: PredictionService, call: Call) -> Reply:
    return _json(V2Live(live=True))


def _ready(service: PredictionService, call: Call) -> Reply:
    ready = service.store.not_ready() is None
    return _json(V2Ready(ready=ready), 200 if ready else 503)


def _model_ready(service: PredictionService, call: Call) -> Reply:
    ready = model_ready(service.store, call.model, call.params.get("version"))
    return _json(V2ModelReady(name=call.model, ready=ready), 200 if ready else 503)


def _model_metadata(service: PredictionService, call: Call) -> Reply:
    return _json(model_metadata(service.store, call.model, call.params.get("version")))


TAG = "open inference protocol (v2)"
INFER_TEXT = (
    "Open Inference Protocol. Inputs: one tensor per feature ({features}), shape [N], or one "
    "[N, {n_features}] tensor in that order. Triton's binary tensor extension is accepted "
    "(Inference-Header-Content-Length)."
)
_INFER_ERRORS = (400, 404, 413, 415, 503)


def _infer_doc(summary: str, extra: str = "") -> Doc:
    return Doc(
        summary,
        tag=TAG,
        replies={200: V2InferResponse},
        errors=_INFER_ERRORS,
        description=INFER_TEXT + extra,
        body=lambda codec: native.json_body(V2InferRequest),
        schemas=lambda codec: [V2InferRequest],
        per_model=True,
    )


def _get(
    path: str,
    handle: Handler,
    summary: str,
    replies: dict[int, type[BaseModel] | None],
    errors: tuple[int, ...] = (),
) -> Endpoint:
    """An open GET endpoint that predicts nothing (health and metadata)."""
    doc = Doc(summary, tag=TAG, replies=replies, errors=errors)
    return Endpoint(path, handle, doc, method="GET", scope=None, predicts=False)


PROTOCOL = Protocol(
    name=NAME,
    error_body=error_body,
    error_model=V2Error,
    status_of=status_of,
    prefix="/v2",
    endpoints=(
        Endpoint("/v2/models/{model}/infer", infer, _infer_doc("Infer with {model} (V2)")),
        Endpoint(
            "/v2/models/{model}/versions/{version}/infer",
            infer,
            _infer_doc(
                "Infer with one served version of {model} (V2)",
                " The version must be the champion or the challenger.",
            ),
        ),
        _get("/v2", _server_metadata, "Server metadata", {200: V2ServerMetadata}),
        _get("/v2/health/live", _live, "Server liveness", {200: V2Live}),
        _get("/v2/health/ready", _ready, "Server readiness", {200: V2Ready, 503: V2Ready}),
        _get(
            "/v2/models/{model}/ready",
            _model_ready,
            "Model readiness",
            {200: V2ModelReady, 503: V2ModelReady},
            (404,),
        ),
        _get(
            "/v2/models/{model}/versions/{version}/ready",
            _model_ready,
            "Readiness of one served version",
            {200: V2ModelReady, 503: V2ModelReady},
            (404,),
        ),
        _get(
            "/v2/models/{model}",
            _model_metadata,
            "Model metadata",
            {200: V2ModelMetadata},
            (404, 503),
        ),
        _get(
            "/v2/models/{model}/versions/{version}",
            _model_metadata,
            "Metadata of one served version",
            {200: V2ModelMetadata},
            (404, 503),
        ),
    ),
)

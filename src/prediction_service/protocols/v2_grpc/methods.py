"""The Open Inference Protocol over gRPC: the same endpoints as V2 over REST, as gRPC methods.

Each method is an ``Endpoint`` whose path is the method's full name and whose call carries
the serialized request message; the gRPC server (``api/grpc_server.py``) is generic over
them. Tensors decode through ``protocols/v2.py``, as REST's do. A request that used
``raw_input_contents`` is answered with ``raw_output_contents`` (``tritonclient.grpc``
reads only those); one that used typed contents is answered with typed contents.

Only the server imports this module: ``tritonclient.grpc`` registers the same protobuf
package, and the two cannot share a process.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from prediction_service.errors import NotFoundError
from prediction_service.protocols import v2
from prediction_service.protocols.base import Call, Endpoint, Protocol, Reply, request_id_problem
from prediction_service.protocols.v2_grpc import grpc_predict_v2_pb2 as pb
from prediction_service.serving.batching import Steps
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.predictions import PredictionService

NAME = "v2_grpc"
SERVICE = "/inference.GRPCInferenceService/"
# The typed-contents field of each datatype.
_CONTENTS = {
    "FP64": "fp64_contents", "FP32": "fp32_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}  # fmt: skip
M = TypeVar("M", bound=Message)


def parse(kind: type[M], body: bytes) -> M:
    """The request message, or 400 (INVALID_ARGUMENT) when it is not one."""
    message = kind()
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise v2.bad(f"the request is not a valid {kind.__name__} message") from None
    return message


def _tensor(inp: Any, raw: bytes | None) -> v2.Tensor:
    if raw is not None:
        return v2.tensor_from_buffer(inp.name, inp.datatype, list(inp.shape), raw)
    field = _CONTENTS.get(inp.datatype)
    if field is None:
        v2.check_datatype(inp.name, inp.datatype)  # raises, naming the accepted types
        raise v2.bad(f"input {inp.name!r}: {inp.datatype} needs raw_input_contents")
    values = list(getattr(inp.contents, field))
    return v2.tensor_from_values(inp.name, inp.datatype, list(inp.shape), values)


def _parameters(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, float):
            out[key] = pb.InferParameter(double_param=value)
        else:
            out[key] = pb.InferParameter(string_param=str(value))
    return out


def _request_id(value: str) -> str | None:
    """The request's ``id`` under the same rule as ``X-Request-ID``; None when empty."""
    if not value:
        return None
    problem = request_id_problem(value.encode("utf-8", "replace"))
    if problem:
        raise v2.bad(f"id: {problem}")
    return value


def _one_row(codec: FeatureCodec, request: Any) -> np.ndarray | None:
    """The commonest call's features read straight from the message: one [1, features]
    FP64 tensor in typed contents, every value valid. None for anything else, which the
    general path decodes (and explains, when it is wrong)."""
    if len(request.inputs) != 1 or request.raw_input_contents:
        return None
    inp = request.inputs[0]
    if inp.datatype != "FP64" or len(inp.shape) != 2 or inp.shape[0] != 1:
        return None
    if inp.name in codec.names and len(codec.names) > 1:  # a feature's own column
        return None
    return codec.row(inp.contents.fp64_contents)


def model_infer(service: PredictionService, call: Call) -> Steps[Reply]:
    """One ModelInferRequest in, its ModelInferResponse out."""
    request = parse(pb.ModelInferRequest, call.body)
    name = request.model_name
    call.params["model"] = name  # the model is in the body: say which
    codec = service.codec(name)
    raw = list(request.raw_input_contents)
    wanted = [o.name for o in request.outputs] or None
    v2.check_outputs(codec.spec, wanted)
    X = _one_row(codec, request)
    if X is None:
        v2.check_inputs(codec, len(request.inputs))
        if raw and len(raw) != len(request.inputs):
            raise v2.bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
        tensors = [_tensor(inp, raw[i] if raw else None) for i, inp in enumerate(request.inputs)]
        X = v2.features(codec, tensors)
    version = request.model_version or None
    p = yield from service.predicting(name, X, NAME, _request_id(request.id), version)
    response = pb.ModelInferResponse(
        model_name=p.model,
        model_version=p.version,
        id=request.id,
        parameters=_parameters(v2.response_parameters(p)),
    )
    for t in v2.outputs(p, wanted):
        out = response.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        if raw:
            response.raw_output_contents.append(t.as_bytes())
        elif isinstance(t.values, np.ndarray):
            out.contents.fp64_contents.extend(t.values.reshape(-1).tolist())
        else:
            out.contents.bytes_contents.extend([s.encode() for s in t.values])
    return Reply(response.SerializeToString())


def _server_live(service: PredictionService, call: Call) -> Reply:
    return Reply(pb.ServerLiveResponse(live=True).SerializeToString())


def _server_ready(service: PredictionService, call: Call) -> Reply:
    ready = service.store.not_ready() is None
    return Reply(pb.ServerReadyResponse(ready=ready).SerializeToString())


def _model_ready(service: PredictionService, call: Call) -> Reply:
    """A known model answers a bool (a version it does not serve is not ready); an unknown
    model is NOT_FOUND."""
    request = parse(pb.ModelReadyRequest, call.body)
    service.store.spec(request.name)
    try:
        ready = v2.model_ready(service.store, request.name, request.version or None)
    except NotFoundError:
        ready = False
    return Reply(pb.ModelReadyResponse(ready=ready).SerializeToString())


def _server_metadata(service: PredictionService, call: Call) -> Reply:
    meta = v2.server_metadata()
    response = pb.ServerMetadataResponse(
        name=meta.name, version=meta.version, extensions=meta.extensions
    )
    return Reply(response.SerializeToString())


def _model_metadata(service: PredictionService, call: Call) -> Reply:
    request = parse(pb.ModelMetadataRequest, call.body)
    meta = v2.model_metadata(service.store, request.name, request.version or None)
    tensor = pb.ModelMetadataResponse.TensorMetadata
    response = pb.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[tensor(**t.model_dump()) for t in meta.inputs],
        outputs=[tensor(**t.model_dump()) for t in meta.outputs],
    )
    return Reply(response.SerializeToString())


def _method(name: str, handle: Any) -> Endpoint:
    """An open method that predicts nothing (health and metadata)."""
    return Endpoint(SERVICE + name, handle, method="GRPC", scope=None, predicts=False)


PROTOCOL = Protocol(
    name=NAME,
    error_body=v2.error_body,
    error_model=v2.V2Error,
    status_of=v2.status_of,
    transport="grpc",
    endpoints=(
        Endpoint(SERVICE + "ModelInfer", model_infer, method="GRPC"),
        _method("ServerLive", _server_live),
        _method("ServerReady", _server_ready),
        _method("ModelReady", _model_ready),
        _method("ServerMetadata", _server_metadata),
        _method("ModelMetadata", _model_metadata),
    ),
)

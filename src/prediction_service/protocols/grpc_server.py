"""The Open Inference Protocol over gRPC, in the API's process and on its event loop.

Started by the app's lifespan when ``PREDICT_GRPC_PORT`` is set; it serves the same
``Services`` as the REST lanes (same store, A/B split, log and metrics, with protocol
``v2_grpc``). Tensors decode through ``protocols/v2.py``, as REST's do. A request that used
``raw_input_contents`` is answered with ``raw_output_contents`` (``tritonclient.grpc`` reads
only those); one that used typed contents is answered with typed contents.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import grpc
import numpy as np

from prediction_service.errors import NotFoundError, ServiceError
from prediction_service.protocols import v2
from prediction_service.protocols.v2_grpc import grpc_predict_v2_pb2 as pb
from prediction_service.protocols.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from prediction_service.services import Services

log = logging.getLogger(__name__)

# Requests with more tensor elements than this are answered from a worker thread.
INLINE_ELEMENTS = 2048
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The typed-contents field of each datatype.
_CONTENTS = {
    "FP64": "fp64_contents", "FP32": "fp32_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}  # fmt: skip


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


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.services.store.not_ready() is None)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """A known model answers a bool (a version it does not serve is not ready); an unknown
        model is NOT_FOUND."""
        store = self.services.store
        await self._call(context, store.spec, request.name)
        try:
            ready = v2.model_ready(store, request.name, request.version or None)
        except NotFoundError:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**v2.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        meta = await self._call(
            context, v2.model_metadata, self.services.store, request.name, request.version or None
        )
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        access = self.services.access
        if not access.is_open("predict"):
            await self._call(context, self._authorize, context, request, counted=True)
        elements = sum(math.prod(inp.shape) for inp in request.inputs)
        if elements <= INLINE_ELEMENTS:
            return await self._call(context, self.infer, request, counted=True)
        return await self._call(context, asyncio.to_thread, self.infer, request, counted=True)

    def _authorize(self, context: Any, request: Any) -> None:
        """The predict scope, from the call's ``authorization`` metadata."""
        metadata = dict(context.invocation_metadata() or ())
        peer = context.peer() or ""  # "ipv4:127.0.0.1:5555"
        client = peer.split(":")[1] if peer.count(":") >= 2 else peer
        self.services.access.check("predict", metadata.get("authorization"), client)

    def infer(self, request: Any) -> Any:
        """One ModelInferRequest in, its ModelInferResponse out (no transport here)."""
        services, name = self.services, request.model_name
        codec = services.codec(name)
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise v2.bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
        tensors = [_tensor(inp, raw[i] if raw else None) for i, inp in enumerate(request.inputs)]
        wanted = [o.name for o in request.outputs] or None
        v2.check_outputs(codec.spec, wanted)
        X = v2.features(codec, tensors)
        p = services.predictions.predict(
            name, X, v2.GRPC_PROTOCOL, request.id or None, request.model_version or None
        )
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
                out.contents.bytes_contents.extend(s.encode() for s in t.values)
        return response

    async def _call(self, context: Any, fn: Any, *args: Any, counted: bool = False) -> Any:
        """``fn(*args)``, awaited when it is a coroutine function; a domain error becomes the
        gRPC status that matches its HTTP one, with its message."""
        try:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        except ServiceError as exc:
            if counted:
                self._count_error(args, exc.reason)
            code = _CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
            await context.abort(code, exc.message)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            log.exception("unexpected error in a gRPC call")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")

    def _count_error(self, args: tuple[Any, ...], reason: str) -> None:
        request = args[-1]
        name = getattr(request, "model_name", "")
        model = name if name in self.services.specs else "unknown"
        self.services.metrics.prediction_errors.labels(model, reason, v2.GRPC_PROTOCOL).inc()


async def start_grpc(services: Services) -> grpc.aio.Server:
    """Serve the protocol on ``PREDICT_GRPC_HOST:PREDICT_GRPC_PORT`` (workers share the port)."""
    settings = services.settings
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(services), server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC cannot listen on {address}")
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return server

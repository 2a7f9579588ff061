"""The gRPC front end, beside the HTTP one: generic over the protocols' gRPC endpoints.

Started by the app's lifespan when ``PREDICT_GRPC_PORT`` is set, in the API's process, over
the same ``Core`` as HTTP. Each declared gRPC endpoint (``protocols/v2_grpc/methods.py``) is
a method whose request and response messages pass through as bytes: the handler parses
them, so a malformed message is the protocol's own INVALID_ARGUMENT. As over HTTP, the
caller's key is checked before anything is parsed, and a domain error becomes the gRPC
status that matches its HTTP status, with its message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from prediction_service import tracing
from prediction_service.access import AuthError
from prediction_service.core import Core
from prediction_service.errors import ServiceError
from prediction_service.protocols.base import Call, Endpoint, Protocol, answer

log = logging.getLogger(__name__)

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
# Error details a client is told: enough to fix the call, never the whole of its input.
MAX_MESSAGE = 1000


def peer_address(peer: str) -> str:
    """The client's address in a gRPC peer string: ``ipv4:127.0.0.1:5555`` -> 127.0.0.1,
    ``ipv6:[::1]:5555`` -> ::1, ``unix:/path`` -> the path."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].partition("]")[0]
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or peer


class EndpointHandler(grpc.GenericRpcHandler):
    """Finds a call's endpoint by the method's full name; unknown methods are UNIMPLEMENTED."""

    def __init__(self, core: Core, served: Sequence[Protocol]) -> None:
        self.core = core
        self._methods = {
            e.path: grpc.unary_unary_rpc_method_handler(self._behaviour(e, p))
            for p in served
            if p.transport == "grpc"
            for e in p.endpoints
        }

    def service(self, handler_call_details: Any) -> Any:
        return self._methods.get(handler_call_details.method)

    def _behaviour(
        self, endpoint: Endpoint, protocol: Protocol
    ) -> Callable[[bytes, Any], Awaitable[bytes]]:
        core = self.core

        async def behaviour(body: bytes, context: Any) -> bytes:
            call = Call({}, body, headers=_metadata(context))
            if not tracing.enabled:
                return await respond(call, context)
            trace = tracing.start(
                endpoint.path.lstrip("/"), call.headers,
                {"rpc.system": "grpc", "rpc.method": endpoint.path},
            )  # fmt: skip
            await context.send_initial_metadata([("traceparent", trace.traceparent())])
            error = None
            try:
                trace.handler = time.time_ns()
                return await respond(call, context)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {context.code() or exc}"
                raise
            finally:
                code = context.code()
                trace.set(**{"rpc.grpc.status_code": code.value[0] if code else 0})
                tracing.finish(trace, error)

        async def respond(call: Call, context: Any) -> bytes:
            try:
                if sum(name == b"authorization" for name, _ in call.headers) > 1:
                    raise AuthError("send one authorization entry, not several", 400)
                if endpoint.scope is not None and not core.access.is_open(endpoint.scope):
                    client = peer_address(context.peer() or "")
                    core.access.check(endpoint.scope, call.header(b"authorization"), client)
                return (await answer(endpoint, core.predictions, call)).body
            except ServiceError as exc:
                if endpoint.predicts:
                    model = call.params.get("model")
                    label = model if model in core.specs else "unknown"
                    core.metrics.prediction_errors.labels(label, exc.reason, protocol.name).inc()
                code = _CODES.get(protocol.status_of(exc), grpc.StatusCode.INTERNAL)
                await context.abort(code, _short(exc.message))
            except Exception:  # noqa: BLE001 - never a stack trace to the client
                log.exception("unexpected error in %s", endpoint.path)
                await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise AssertionError("context.abort raises")  # pragma: no cover

        return behaviour


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."


def _metadata(context: Any) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):  # binary (-bin) metadata is not ours to read
            out.append((key.lower().encode("latin-1"), value.encode("latin-1", "replace")))
    return out


async def start_grpc(core: Core, served: Sequence[Protocol]) -> grpc.aio.Server:
    """Serve ``served``'s gRPC endpoints on ``PREDICT_GRPC_HOST:PREDICT_GRPC_PORT`` (workers
    share the port)."""
    settings = core.settings
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        handlers=[EndpointHandler(core, served)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1),
        ],
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC cannot listen on {address}")
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return server

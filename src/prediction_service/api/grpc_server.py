"""The gRPC front end, beside the HTTP one: generic over the protocols' gRPC endpoints.

Started by the app's lifespan when ``PREDICT_GRPC_PORT`` is set, in the API's process, over
the same ``Core`` as HTTP, by one of two engines (``PREDICT_GRPC_ENGINE``): our own HTTP/2
(``api/grpc_h2.py``, the default) or grpc.aio (here). Each declared gRPC endpoint
(``protocols/v2_grpc/methods.py``) is a method whose request and response messages pass
through as bytes: the handler parses them, so a malformed message is the protocol's own
INVALID_ARGUMENT. As over HTTP, the caller's key is checked before anything is parsed, and a
domain error becomes the gRPC status that matches its HTTP status (``api/grpc_calls.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from prediction_service import tracing
from prediction_service.api.grpc_calls import admit, begin_trace, end_trace, failure
from prediction_service.core import Core
from prediction_service.protocols.base import Call, Endpoint, Protocol, answer

log = logging.getLogger(__name__)


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
            trace = begin_trace(endpoint, call.headers)
            await context.send_initial_metadata([("traceparent", trace.traceparent())])
            error = None
            try:
                return await respond(call, context)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {context.code() or exc}"
                raise
            finally:
                end_trace(trace, context.code(), error)

        async def respond(call: Call, context: Any) -> bytes:
            try:
                admit(core, endpoint, call, lambda: peer_address(context.peer() or ""))
                return (await answer(endpoint, core.predictions, call)).body
            except Exception as exc:  # noqa: BLE001 - answered as a gRPC status
                code, message = failure(core, endpoint, protocol, call, exc)
                await context.abort(code, message)
            raise AssertionError("context.abort raises")  # pragma: no cover

        return behaviour


def _metadata(context: Any) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):  # binary (-bin) metadata is not ours to read
            out.append((key.lower().encode("latin-1"), value.encode("latin-1", "replace")))
    return out


async def start_grpc(core: Core, served: Sequence[Protocol]) -> Any:
    """Serve ``served``'s gRPC endpoints on ``PREDICT_GRPC_HOST:PREDICT_GRPC_PORT`` (workers
    share the port) with ``PREDICT_GRPC_ENGINE``: our own HTTP/2 (``api/grpc_h2.py``) or
    grpc.aio. Either has ``stop(grace)``."""
    settings = core.settings
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if settings.grpc_engine == "h2":
        from prediction_service.api.grpc_h2 import start_h2

        try:
            server: Any = await start_h2(
                core, served, (settings.grpc_host, settings.grpc_port or 0)
            )
        except OSError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from None
    else:
        limit = settings.max_body_bytes
        server = grpc.aio.server(
            handlers=[EndpointHandler(core, served)],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 1),
            ],
        )
        if server.add_insecure_port(address) == 0:
            raise RuntimeError(f"gRPC cannot listen on {address}")
        await server.start()
    log.info("Open Inference Protocol over gRPC on %s (%s)", address, settings.grpc_engine)
    return server

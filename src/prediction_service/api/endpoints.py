"""The protocols' endpoints, answered in front of FastAPI; routed from their declarations.

Every endpoint a protocol declares (``protocols/``) is served here as plain ASGI: match the
path, check the caller's key (before the body is read), read the body (bounded), hand the
``Call`` to the endpoint's handler, write its ``Reply``. Errors come out in the protocol's
own shape with the status the domain error carries. Everything else goes to FastAPI, after
the same admission: the route's key checked before its body is read, and the body bounded.

Bodies are held in memory while they are decoded, so what they may take at once is bounded
too (``BodyBudget``): however many large bodies arrive together, they wait their turn.

Measured in-process on this machine (bench/profile_request.py), a FastAPI route costs about
230 us a request before its endpoint runs, a raw route at the head of Starlette's router
about 27 us, while a model answers one row in 20-40 us; so the endpoints sit in front.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_service import tracing
from prediction_service.access import AccessControl, AuthError
from prediction_service.errors import (
    BatchTooLargeError,
    MethodNotAllowedError,
    OverloadedError,
    ServiceError,
)
from prediction_service.metrics import Metrics
from prediction_service.protocols.base import JSON_CONTENT, Call, Endpoint, Protocol, Reply, answer
from prediction_service.serving.predictions import PredictionService

log = logging.getLogger(__name__)

# One record's body; a batch's limit is PREDICT_MAX_BODY_BYTES.
RECORD_BODY = 64 * 1024
# A FastAPI route's body (feedback, promote, retrain, traffic): small JSON objects.
ROUTE_BODY = 64 * 1024
# How long a body waits for room in the budget before it is refused.
BUDGET_WAIT_S = 5.0
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyBudget:
    """Bytes of request bodies held at once, beyond the first ``RECORD_BODY`` of each (so a
    single record never waits): taken as a body is read, given back when its request ends.
    Single-threaded: only the event loop takes and gives."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room: asyncio.Event | None = None

    async def take(self, n: int) -> None:
        """Room for ``n`` more bytes; OverloadedError when none comes in BUDGET_WAIT_S."""
        if n > self.limit:
            raise OverloadedError(f"a body of this size cannot be held ({self.limit} bytes)")
        deadline = asyncio.get_running_loop().time() + BUDGET_WAIT_S
        while self.used + n > self.limit:
            if self._room is None:
                self._room = asyncio.Event()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._room.wait(), max(left, 0))
            except TimeoutError:
                raise OverloadedError(
                    "too many large request bodies at once; retry shortly", 1
                ) from None
        self.used += n

    def give(self, n: int) -> None:
        if n:
            self.used -= n
            if self._room is not None:
                self._room.set()
                self._room = None


@dataclass(frozen=True, slots=True)
class RouteLabel:
    """What ``scope["route"]`` holds for an endpoint: the HTTP metrics read ``path``."""

    path: str


@dataclass(frozen=True, slots=True)
class Target:
    """An endpoint, matched: its protocol, path parameters and metrics label."""

    endpoint: Endpoint
    protocol: Protocol
    params: dict[str, str]
    route: RouteLabel


class EndpointRouter:
    """ASGI: serves the declared HTTP endpoints, hands every other request to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        protocols: Sequence[Protocol],
        service: PredictionService,
        access: AccessControl,
        metrics: Metrics,
        max_body: int,
        budget: BodyBudget,
        route_scope: Callable[[Scope], str | None],
    ) -> None:
        self.app = app
        self.service = service
        self.access = access
        self.metrics = metrics
        self.budget = budget
        self.route_scope = route_scope  # the access scope a FastAPI route needs
        self.models = frozenset(service.codecs)
        self.default = protocols[0]
        self._limits = {"record": RECORD_BODY, "batch": max_body}
        self._declared = [(e, p) for p in protocols if p.transport == "http" for e in p.endpoints]
        # Paths with the known models filled in, found by one dict lookup: the hot path.
        self._exact: dict[str, list[Target]] = {}
        for endpoint, protocol in self._declared:
            if endpoint.params == ("model",):
                for model in sorted(self.models):
                    self._add_exact(endpoint, protocol, {"model": model})
            elif not endpoint.params:
                self._add_exact(endpoint, protocol, {})

    def _add_exact(self, endpoint: Endpoint, protocol: Protocol, params: dict[str, str]) -> None:
        path = endpoint.path.replace("{model}", params.get("model", "{model}"))
        route = RouteLabel(endpoint.label(params, self.models))
        self._exact.setdefault(path, []).append(Target(endpoint, protocol, params, route))

    def targets(self, path: str) -> list[Target]:
        """The endpoints at ``path`` (one per method): exact paths first, then templates (a
        version, or a model this service does not have, which its handler answers 404)."""
        found = self._exact.get(path)
        if found is not None:
            return found
        targets = []
        for endpoint, protocol in self._declared:
            params = endpoint.match(path)
            if params is not None:
                route = RouteLabel(endpoint.label(params, self.models))
                targets.append(Target(endpoint, protocol, params, route))
        return targets

    def protocol_for(self, path: str) -> Protocol:
        """Whose error shape answers a request to ``path``."""
        targets = self.targets(path)
        return targets[0].protocol if targets else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        targets = self.targets(scope["path"])
        if not targets:
            await self._route(scope, receive, send)
            return
        method = scope["method"]
        target = next((t for t in targets if t.endpoint.method == method), None)
        if target is None:
            await _method_not_allowed(targets, scope, send)
            return
        scope["route"] = target.route  # labels the request in the HTTP metrics
        content_type = authorization = None
        twice = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                twice = authorization is not None
                authorization = value.decode("latin-1")
        endpoint = target.endpoint
        try:  # before the body is read: no work for a caller without a key
            if twice or endpoint.scope in self.access.closed:
                self._admit(endpoint.scope, scope, authorization, twice)
            message: Message = await receive()  # most bodies are one message
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            if message.get("more_body", False) or len(body) > RECORD_BODY:
                read = await self._read(scope, receive, self._limits[endpoint.limit], message)
                if read is None:
                    return
                body = read
        except ServiceError as exc:
            await _send(send, self._error(target, exc))
            return
        # The request id was checked, or made when the client sent none, by the outer
        # middleware.
        call = Call(
            dict(target.params), body, content_type, scope.get("request_id"), scope["headers"]
        )
        if tracing.enabled:
            trace = tracing.current()
            if trace is not None:
                trace.handler = time.time_ns()
        try:
            try:
                reply = await answer(endpoint, self.service, call)
            except Exception as exc:  # noqa: BLE001 - an error reply, never a stack trace
                reply = self._failed(target, call, exc)
        except asyncio.CancelledError:
            # The server's graceful shutdown ran out while this request was still being
            # answered: say so in the protocol's shape, not uvicorn's plain-text 500.
            error = OverloadedError("the service stopped before this request was answered")
            await _send(send, self._error(target, error))
            raise
        finally:
            self.budget.give(scope.pop("held_bytes", 0))
        # A length, not chunked framing: one less thing for the server to frame and every
        # client to parse.
        headers = [*reply.headers, (b"content-length", b"%d" % len(reply.body))]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    def _admit(
        self, needs: str | None, scope: Scope, authorization: str | None, twice: bool
    ) -> None:
        """The caller's key, for the access scope ``needs`` (None: open to all)."""
        if twice:
            raise AuthError("send one Authorization header, not several", 400)
        if needs is not None and not self.access.is_open(needs):
            client = scope.get("client")
            self.access.check(needs, authorization, client[0] if client else None)

    async def _read(
        self, scope: Scope, receive: Receive, limit: int, first: Message | None = None
    ) -> bytes | None:
        """The body (starting with ``first``, already received), bounded by ``limit`` (413
        past it: the rest is never read) and by the budget: what a body holds beyond its
        first RECORD_BODY bytes is taken as it is read and recorded in the scope (given
        back when its request ends, or here when the read fails). None when the client
        disconnects."""
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = first if first is not None else await receive()
                first = None
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                if size + len(chunk) > limit:
                    raise BatchTooLargeError(f"request body exceeds the limit of {limit} bytes")
                extra = max(0, size + len(chunk) - max(size, RECORD_BODY))
                if extra:
                    await self.budget.take(extra)
                    scope["held_bytes"] = scope.get("held_bytes", 0) + extra
                size += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except BaseException:
            self.budget.give(scope.pop("held_bytes", 0))
            raise

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A FastAPI route: its key checked and its body read (bounded) before FastAPI
        parses anything, then handed over with the body replayed."""
        authorization = None
        twice = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                twice = authorization is not None
                authorization = value.decode("latin-1")
        try:
            self._admit(self.route_scope(scope), scope, authorization, twice)
            body = b""
            if scope["method"] in _BODY_METHODS:
                read = await self._read(scope, receive, ROUTE_BODY)
                if read is None:
                    return
                body = read
        except ServiceError as exc:
            status, payload = self.default.error(exc)
            headers = [
                JSON_CONTENT,
                *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
            ]
            await _send(send, Reply(orjson.dumps(payload), headers, status))
            return
        # A route's body is at most ROUTE_BODY (64 KB): it holds nothing of the budget.
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # only a disconnect is left to hear
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, self._allow(scope, send))

    def _failed(self, target: Target, call: Call, exc: Exception) -> Reply:
        if isinstance(exc, ServiceError):
            return self._error(target, exc, call.params)
        log.error("unexpected error on %s", target.endpoint.path, exc_info=exc)
        return self._error(target, ServiceError("internal server error"), call.params)

    def _error(
        self, target: Target, exc: ServiceError, params: dict[str, str] | None = None
    ) -> Reply:
        if target.endpoint.predicts:
            self.count_error(target.protocol, (params or target.params).get("model"), exc)
        status, body = target.protocol.error(exc)
        headers = [
            JSON_CONTENT,
            *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
        ]
        return Reply(orjson.dumps(body), headers, status)

    def count_error(self, protocol: Protocol, model: str | None, exc: ServiceError) -> None:
        label = model if model in self.models else "unknown"
        self.metrics.prediction_errors.labels(label, exc.reason, protocol.name).inc()

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


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _matches(route: object, scope: Scope, method: str) -> bool:
    match, _ = route.matches({**scope, "method": method})  # type: ignore[attr-defined]
    return bool(match == Match.FULL)


async def _method_not_allowed(targets: Iterable[Target], scope: Scope, send: Send) -> None:
    targets = list(targets)
    scope["route"] = targets[0].route
    allowed = ", ".join(sorted({t.endpoint.method for t in targets}))
    status, body = targets[0].protocol.error(MethodNotAllowedError(scope["method"], allowed))
    headers = [JSON_CONTENT, (b"allow", allowed.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


async def _send(send: Send, reply: Reply) -> None:
    # A length, not chunked framing: one less thing for the server to frame and every
    # client to parse.
    headers = [*reply.headers, (b"content-length", b"%d" % len(reply.body))]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})

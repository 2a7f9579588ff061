"""Access control for FastAPI routes: ``dependencies=[Scope("read")]`` and so on.

The rules live in ``access.py`` (shared with the protocols' endpoints and the gRPC server); this
only reads the request's Authorization header and client address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import Scope as ASGIScope

from prediction_service.api.deps import CoreDep


def bearer_scheme(scope: str) -> HTTPBearer:
    """The OpenAPI security scheme of ``scope``, named after it, so the document says which
    scope each operation needs (api/openapi.py drops it where the scope is open)."""
    return HTTPBearer(
        auto_error=False,
        scheme_name=scope,
        description=f"an API key with the {scope} scope (or an admin key)",
    )


def Scope(scope: str) -> Any:  # noqa: N802 - reads like the dependency it makes
    scheme = bearer_scheme(scope)

    def require(request: Request, core: CoreDep, _: Any = Depends(scheme)) -> None:
        client = request.client.host if request.client else None
        core.access.check(scope, request.headers.get("authorization"), client)

    require.scope = scope  # type: ignore[attr-defined] # read by route_scope, below
    return Depends(require)


Admin = Scope("admin")


def route_scope(routes: Sequence[BaseRoute]) -> Callable[[ASGIScope], str | None]:
    """The access scope the route a request matches needs (None: open or no such route),
    so the front end checks the caller's key before FastAPI reads the body."""

    @lru_cache(maxsize=1024)
    def of(method: str, path: str) -> str | None:
        probe = {"type": "http", "method": method, "path": path}
        for route in routes:
            match, _ = route.matches(probe)
            if match == Match.FULL and isinstance(route, APIRoute):
                found = [getattr(d.dependency, "scope", None) for d in route.dependencies]
                return next((s for s in found if s is not None), None)
        return None

    return lambda scope: of(scope["method"], scope["path"])

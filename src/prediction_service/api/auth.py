"""Access control for FastAPI routes: ``dependencies=[Scope("read")]`` and so on.

The rules live in ``access.py`` (shared with the protocols' endpoints and the gRPC server); this
only reads the request's Authorization header and client address.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPBearer
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

    return Depends(require)


Admin = Scope("admin")


def route_scope(app: FastAPI) -> Callable[[ASGIScope], str | None]:
    """The access scope a request to one of ``app``'s routes needs (None: open, or no such
    route), so the front end checks the caller's key before FastAPI reads the body. Read
    from the app's own OpenAPI document, where each operation names its scope."""
    table: list[tuple[str, re.Pattern[str], str]] = []

    def build() -> None:
        for path, item in app.openapi()["paths"].items():
            regex = re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in item.items():
                for requirement in op.get("security", []):
                    table.extend((method.upper(), regex, name) for name in requirement)

    @lru_cache(maxsize=1024)
    def of(method: str, path: str) -> str | None:
        if not table:
            build()
        return next((name for m, regex, name in table if m == method and regex.match(path)), None)

    return lambda scope: of(scope["method"], scope["path"])

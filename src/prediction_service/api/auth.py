"""Access control for FastAPI routes: ``dependencies=[Scope("read")]`` and so on.

The rules live in ``access.py`` (shared with the protocols' endpoints and the gRPC server); this
only reads the request's Authorization header and client address.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

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

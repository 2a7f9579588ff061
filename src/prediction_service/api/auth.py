"""Access control for FastAPI routes: ``dependencies=[Scope("read")]`` and so on.

The rules live in ``access.py`` (shared with the prediction lanes and the gRPC server); this
only reads the request's Authorization header and client address.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from prediction_service.api.deps import ServicesDep

# Declares the bearer scheme in OpenAPI (the "Authorize" button in /docs); checking is ours.
_bearer = HTTPBearer(auto_error=False, description="an API key, or PREDICT_ADMIN_TOKEN")


def Scope(scope: str) -> Any:  # noqa: N802 - reads like the dependency it makes
    def require(request: Request, services: ServicesDep, _: Any = Depends(_bearer)) -> None:
        client = request.client.host if request.client else None
        services.access.check(scope, request.headers.get("authorization"), client)

    return Depends(require)


Admin = Scope("admin")

"""Bearer-token auth for admin routes. No token configured means the admin API is off."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prediction_service.api.deps import ServicesDep

_bearer = HTTPBearer(auto_error=False, description="PREDICT_ADMIN_TOKEN")


def require_admin(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = services.settings.admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(403, "admin API disabled: set PREDICT_ADMIN_TOKEN to enable it")
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers=challenge)
    # Constant-time comparison; the token itself is never logged or echoed.
    if not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "invalid bearer token", headers=challenge)


Admin = Depends(require_admin)

"""Every error becomes JSON with a clear message, translated here and nowhere else.

Domain errors carry their HTTP status; each protocol gives the body its own shape (ours
``{"detail", "errors"}``, V2 ``{"error"}``, MLflow ``{"error_code", "message"}``), for the
FastAPI routes here and for the prediction lanes (``api/lanes.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from prediction_service.api.responses import JSONResponse
from prediction_service.errors import InvalidInputError, ServiceError
from prediction_service.protocols import mlflow, native, v2
from prediction_service.serving.codec import dotted, field_errors
from prediction_service.serving.service import EXPLAIN

log = logging.getLogger(__name__)

_BODIES: dict[str, Callable[[ServiceError], dict[str, Any]]] = {
    native.PROTOCOL: native.error_body,
    EXPLAIN: native.error_body,  # the explain lanes take and answer our own protocol's bodies
    v2.PROTOCOL: v2.error_body,
    mlflow.PROTOCOL: mlflow.error_body,
}
_STATUS: dict[str, Callable[[ServiceError], int]] = {v2.PROTOCOL: v2.status_of}


def error_reply(protocol: str, exc: ServiceError) -> tuple[int, dict[str, Any]]:
    """The status and body that answer ``exc`` in ``protocol``."""
    status = _STATUS[protocol](exc) if protocol in _STATUS else exc.status_code
    return status, _BODIES[protocol](exc)


def protocol_of(path: str) -> str:
    """Whose error shape a request to ``path`` is answered in."""
    if path.startswith("/v2/") or path == "/v2":
        return v2.PROTOCOL
    if path.endswith("/invocations"):
        return mlflow.PROTOCOL
    return native.PROTOCOL


def _protocol(request: Request) -> str:
    return protocol_of(request.url.path)


async def _validation(request: Request, exc: RequestValidationError) -> Response:
    error = InvalidInputError.from_fields(field_errors(exc.errors(), dotted))
    status, body = error_reply(_protocol(request), error)
    return JSONResponse(body, status_code=status)


async def _service(request: Request, exc: ServiceError) -> Response:
    status, body = error_reply(_protocol(request), exc)
    return JSONResponse(body, status_code=status, headers=exc.headers or None)


async def _http(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400:  # FastAPI could not parse the body (not UTF-8, not JSON)
        error = InvalidInputError(f"invalid input: body: {exc.detail}")
        status, body = error_reply(_protocol(request), error)
        return JSONResponse(body, status_code=status)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, _service)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)

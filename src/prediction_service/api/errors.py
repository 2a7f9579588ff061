"""Every error of a FastAPI route becomes JSON with a clear message, translated here.

Domain errors carry their HTTP status. The routes FastAPI serves all speak our own
protocol's shape (``{"detail", "errors"}``); the protocols' endpoints answer theirs in
``api/endpoints.py``, from each protocol's declaration.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from prediction_service.api.responses import JSONResponse
from prediction_service.errors import InvalidInputError, ServiceError, UnknownModelError
from prediction_service.protocols import native
from prediction_service.serving.codec import dotted, field_errors, short

log = logging.getLogger(__name__)


def _reply(exc: ServiceError) -> Response:
    return JSONResponse(native.error_body(exc), exc.status_code, headers=exc.headers or None)


async def _validation(request: Request, exc: RequestValidationError) -> Response:
    for error in exc.errors():
        # A body told apart by its model (POST /retrain) naming a model there is not.
        ctx = error.get("ctx") or {}
        if error["type"] == "union_tag_invalid" and ctx.get("discriminator") == "'model'":
            known = sorted(request.app.state.core.specs)
            return _reply(UnknownModelError(short(str(ctx.get("tag"))), known))
    return _reply(InvalidInputError.from_fields(field_errors(exc.errors(), dotted)))


async def _service(request: Request, exc: ServiceError) -> Response:
    return _reply(exc)


async def _http(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400:  # FastAPI could not parse the body (not UTF-8, not JSON)
        return _reply(InvalidInputError(f"invalid input: body: {exc.detail}"))
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

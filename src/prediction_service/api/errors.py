"""Every error becomes JSON with a clear message, translated here and nowhere else."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from prediction_service.api.responses import JSONResponse
from prediction_service.errors import (
    BatchTooLargeError,
    ModelNotLoadedError,
    ServiceError,
    UnknownModelError,
)

log = logging.getLogger(__name__)


def _count_prediction_error(request: Request, reason: str) -> None:
    """Failed predictions by model and reason; unknown names collapse to one label value."""
    parts = request.url.path.split("/")
    if len(parts) < 3 or parts[1] != "predict":
        return
    state = request.app.state
    model = parts[2] if parts[2] in state.specs else "unknown"
    state.metrics.prediction_errors.labels(model, reason).inc()


_REASONS: dict[type[ServiceError], str] = {
    BatchTooLargeError: "batch_too_large",
    ModelNotLoadedError: "model_not_loaded",
    UnknownModelError: "unknown_model",
}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)[:100]


async def _validation(request: Request, exc: RequestValidationError) -> Response:
    errors = [
        {"field": _field(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    for e, raw in zip(errors, exc.errors()):
        if raw["type"] == "json_invalid":  # its loc holds a character offset, not a field
            where = raw["loc"][-1] if raw["loc"] else 0
            detail = (raw.get("ctx") or {}).get("error", "")
            e.update(field="body", message=f"JSON decode error at character {where}: {detail}")
        elif "input" in raw and raw["type"] != "missing":
            e["input"] = _safe(raw["input"])
    _count_prediction_error(request, "invalid_input")
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        summary += f"; and {len(errors) - 5} more"
    return JSONResponse({"detail": f"invalid input: {summary}", "errors": errors}, status_code=422)


async def _service(request: Request, exc: ServiceError) -> Response:
    reason = _REASONS.get(type(exc))
    if reason:
        _count_prediction_error(request, reason)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code)


async def _http(request: Request, exc: HTTPException) -> Response:
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

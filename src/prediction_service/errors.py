"""Domain errors. Each carries the HTTP status it maps to; the API translates them in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NotRequired, TypedDict

# The longest message an error carries: they quote client input, which can be megabytes.
MAX_MESSAGE = 2000


class ServiceError(Exception):
    status_code = 500
    reason = "error"  # the prediction_errors_total label, where a prediction fails with it
    headers: dict[str, str] = {}  # response headers that go with it (WWW-Authenticate, ...)

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"
        super().__init__(message)
        self.message = message


class ConfigurationError(ServiceError):
    """A setting the service cannot run with; the message says what to set instead."""


class SpecError(ServiceError):
    def __init__(self, path: Path, field: str, message: str) -> None:
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.field = field


class DataValidationError(ServiceError):
    status_code = 422

    def __init__(self, path: Path, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: data failed validation:\n{lines}")
        self.path = path
        self.problems = problems


class UnknownModelError(ServiceError):
    status_code = 404
    reason = "unknown_model"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(known)}")
        self.name = name


class ModelNotLoadedError(ServiceError):
    status_code = 503
    reason = "model_not_loaded"


class OverloadedError(ServiceError):
    """The service cannot take this work now (its memory budget, or it is stopping); come
    back after ``Retry-After`` seconds."""

    status_code = 503
    reason = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class BatchTooLargeError(ServiceError):
    status_code = 413
    reason = "batch_too_large"


class FieldProblem(TypedDict):
    """What is wrong with one field of a request (the ``errors`` of a 422)."""

    field: str
    message: str
    type: str
    input: NotRequired[Any]  # the value sent, when it helps (quoted short)


class InvalidInputError(ServiceError):
    """A request the service understood but must refuse; ``errors`` names each bad field."""

    status_code = 422
    reason = "invalid_input"

    def __init__(self, message: str, errors: list[FieldProblem] | None = None) -> None:
        super().__init__(message)
        self.errors = errors

    @classmethod
    def from_fields(cls, errors: list[FieldProblem]) -> InvalidInputError:
        """One message summing up field errors (``{"field", "message", ...}``), first five named."""
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        return cls(f"invalid input: {summary}", errors)


class NotFoundError(ServiceError):
    status_code = 404
    reason = "not_found"


class GoneError(ServiceError):
    """What was asked for existed and has gone (a prediction moved to the archive)."""

    status_code = 410
    reason = "gone"


class ConflictError(ServiceError):
    status_code = 409
    reason = "conflict"


class TooManyInvalidRowsError(ServiceError):
    """An offline scoring job's invalid rows passed its bound (``--max-invalid-fraction``)."""

    status_code = 422
    reason = "too_many_invalid_rows"


class MethodNotAllowedError(ServiceError):
    status_code = 405
    reason = "method_not_allowed"

    def __init__(self, method: str, allowed: str = "POST") -> None:
        super().__init__(f"method {method} is not allowed here; use {allowed}")


class NotExplainableError(ServiceError):
    """The served version has no exact explainer (its estimator, or its age)."""

    status_code = 501
    reason = "not_explainable"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    reason = "unsupported_media_type"

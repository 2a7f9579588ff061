"""Domain errors. Each carries the HTTP status it maps to; the API translates them in one place."""

from __future__ import annotations

from pathlib import Path


class ServiceError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(known)}")


class ModelNotLoadedError(ServiceError):
    status_code = 503


class BatchTooLargeError(ServiceError):
    status_code = 413


class InvalidInputError(ServiceError):
    status_code = 422


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    status_code = 409

"""How the service, uvicorn and the training commands write their logs.

``PREDICT_LOG_FORMAT=text`` (the default) keeps lines a person reads on a terminal;
``json`` writes one JSON object per line for a log pipeline: ``time`` (UTC, ISO 8601),
``level``, ``logger``, ``message``, and where they apply ``request_id``, ``trace_id`` and
``span_id`` (with tracing on), ``model`` and ``version`` (a record's ``extra``), the request
fields of uvicorn's access lines, and ``exception`` with its traceback.
"""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from prediction_service import tracing

Format = Literal["text", "json"]
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Set by the HTTP middleware only when lines are JSON (a context variable per request).
json_lines = False
request_id: ContextVar[str | None] = ContextVar("prediction_service_request_id", default=None)

_EXTRA = ("model", "version", "job_id")
_ACCESS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            line["request_id"] = rid
        ids = tracing.ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        for key in _EXTRA:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line.update(zip(_ACCESS, record.args))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def config(fmt: Format, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the root logger and uvicorn's (uvicorn takes it
    as ``log_config``, and applies it in each worker process)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    uvicorn = {"handlers": ["main"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"handlers": ["main"], "level": level.upper()},
        "loggers": {"uvicorn": uvicorn, "uvicorn.error": {"level": level.upper()},
                    "uvicorn.access": uvicorn},  # fmt: skip
    }


def setup(fmt: Format, level: str = "INFO") -> None:
    """Configure this process's logging (the commands; the server's workers get ``config``
    through uvicorn)."""
    global json_lines
    json_lines = fmt == "json"
    logging.config.dictConfig(config(fmt, level))

"""Our own REST protocol: ``POST /predict/<model>`` (one record) and ``/predict/<model>/batch``.

Errors are ``{"detail": str, "errors": [...]}``, the same shape every FastAPI route answers.
"""

from __future__ import annotations

from typing import Any

import orjson

from prediction_service.errors import InvalidInputError, ServiceError, UnsupportedMediaTypeError
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.service import Prediction

PROTOCOL = "native"
_UNPARSED = object()


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNPARSED  # the codec explains it from the raw text


def check_json(content_type: str | None) -> None:
    """JSON bodies only; a request without a Content-Type is read as JSON."""
    mime = (content_type or "application/json").partition(";")[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"content type {mime!r} is not accepted; send application/json"
        )


def decode_one(codec: FeatureCodec, body: bytes, content_type: str | None = None) -> Any:
    check_json(content_type)
    return codec.record(_loads(body), raw=body)


def decode_batch(codec: FeatureCodec, body: bytes, content_type: str | None = None) -> Any:
    check_json(content_type)
    return codec.batch(_loads(body), raw=body)


def encode_one(p: Prediction) -> bytes:
    out: dict[str, Any] = {
        "model": p.model,
        "registered_name": p.registered_name,
        "version": p.version,
        "prediction": p.values[0],
    }
    if p.classes is not None and p.probabilities is not None:
        out["probabilities"] = dict(zip(p.classes, p.probabilities[0].tolist()))
    out["prediction_id"] = p.ids[0]
    out["latency_ms"] = p.latency_ms
    return orjson.dumps(out)


def encode_batch(p: Prediction) -> bytes:
    if p.classes is None or p.probabilities is None:
        items = [{"prediction_id": i, "prediction": v} for i, v in zip(p.ids, p.values)]
    else:
        classes = p.classes
        items = [
            {"prediction_id": i, "prediction": v, "probabilities": dict(zip(classes, row))}
            for i, v, row in zip(p.ids, p.values, p.probabilities.tolist())
        ]
    return orjson.dumps(
        {
            "model": p.model,
            "registered_name": p.registered_name,
            "version": p.version,
            "count": len(items),
            "predictions": items,
            "latency_ms": p.latency_ms,
        }
    )


def error_body(exc: ServiceError) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": exc.message}
    if isinstance(exc, InvalidInputError) and exc.errors:
        body["errors"] = exc.errors
    return body

"""Our own REST protocol: ``POST /predict/<model>`` (one record) and ``/predict/<model>/batch``,
and the same bodies at ``/explain/<model>[/batch]``.

Errors are ``{"detail": str, "errors": [...]}``, the same shape every FastAPI route answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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


def _explained(
    p: Prediction, row: int, contributions: np.ndarray, features: Sequence[str]
) -> dict[str, Any]:
    """One row's explanation: regressors explain the value, classifiers each class's raw
    score in log-odds (a binary model has one: the second class's)."""
    item: dict[str, Any] = {"prediction_id": p.ids[row], "prediction": p.values[row]}
    c = contributions[row].tolist()  # (outputs, features + 1): contributions, then the base
    if p.classes is None:
        item["base_value"] = c[0][-1]
        item["contributions"] = dict(zip(features, c[0][:-1]))
        return item
    assert p.probabilities is not None
    item["probabilities"] = dict(zip(p.classes, p.probabilities[row].tolist()))
    explained = p.classes[-len(c) :]  # all classes, or the positive one of two
    item["output"] = "log-odds"
    item["base_value"] = {k: v[-1] for k, v in zip(explained, c)}
    item["contributions"] = {k: dict(zip(features, v[:-1])) for k, v in zip(explained, c)}
    item["raw_score"] = {k: math.fsum(v) for k, v in zip(explained, c)}
    return item


def encode_explanation(p: Prediction, contributions: np.ndarray, features: Sequence[str]) -> bytes:
    item = _explained(p, 0, contributions, features)
    head = {"model": p.model, "registered_name": p.registered_name, "version": p.version}
    return orjson.dumps({**head, **item, "latency_ms": p.latency_ms})


def encode_explanations(p: Prediction, contributions: np.ndarray, features: Sequence[str]) -> bytes:
    items = [_explained(p, i, contributions, features) for i in range(len(p))]
    return orjson.dumps(
        {
            "model": p.model,
            "registered_name": p.registered_name,
            "version": p.version,
            "count": len(items),
            "explanations": items,
            "latency_ms": p.latency_ms,
        }
    )


def error_body(exc: ServiceError) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": exc.message}
    if isinstance(exc, InvalidInputError) and exc.errors:
        body["errors"] = exc.errors
    return body

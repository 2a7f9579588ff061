"""Our own REST protocol: ``POST /predict/<model>`` (one record) and ``/predict/<model>/batch``.

Errors are ``{"detail": str, "errors": [...]}``, the same shape every FastAPI route answers.
The explanation endpoints (``protocols/explain.py``) take the same bodies.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from prediction_service.errors import InvalidInputError, ServiceError, UnsupportedMediaTypeError
from prediction_service.protocols.base import Call, Doc, Endpoint, Protocol, Reply
from prediction_service.serving.batching import Steps
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.predictions import Prediction, PredictionService

NAME = "native"
_UNPARSED = object()


class Wire(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


class FieldError(Wire):
    field: str
    message: str
    type: str
    input: Any = None


class ErrorOut(Wire):
    detail: str
    errors: list[FieldError] | None = None


class PredictionOut(Wire):
    model: str
    registered_name: str
    version: str
    prediction: float | str
    probabilities: dict[str, float] | None = Field(
        default=None, description="Probability of each class (classifiers only)."
    )
    prediction_id: str
    latency_ms: float


class BatchItemOut(Wire):
    prediction_id: str
    prediction: float | str
    probabilities: dict[str, float] | None = None


class BatchOut(Wire):
    model: str
    registered_name: str
    version: str
    count: int
    predictions: list[BatchItemOut]
    latency_ms: float


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
    doc = _loads(body)
    if type(doc) is dict and "records" in doc:
        raise InvalidInputError(
            f'invalid input: a body of {{"records": [...]}} is a batch; send it to '
            f"/predict/{codec.spec.name}/batch, or one record here"
        )
    return codec.record(doc, raw=body)


def decode_batch(codec: FeatureCodec, body: bytes, content_type: str | None = None) -> Any:
    check_json(content_type)
    codec.check_size(body)
    doc = _loads(body)
    if type(doc) is list:
        raise InvalidInputError(
            'invalid input: a batch is an object, {"records": [...]}: wrap the list of '
            "records in it"
        )
    if type(doc) is dict and "records" not in doc and set(doc) & set(codec.names):
        raise InvalidInputError(
            f"invalid input: this is one record; send it to /predict/{codec.spec.name}, "
            'or as {"records": [record]} here'
        )
    return codec.batch(doc, raw=body)


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


def json_body(model: Any) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def one_body(codec: FeatureCodec | None) -> dict[str, Any]:
    assert codec is not None  # documented per model
    return json_body(codec.record_model)


def batch_body(codec: FeatureCodec | None) -> dict[str, Any]:
    assert codec is not None
    return json_body(codec.batch_model)


ERRORS = (404, 413, 415, 422, 503)


def predict_one(service: PredictionService, call: Call) -> Steps[Reply]:
    X = decode_one(service.codec(call.model), call.body, call.content_type)
    p = yield from service.predicting(call.model, X, NAME, call.request_id)
    return Reply(encode_one(p))


def predict_batch(service: PredictionService, call: Call) -> Steps[Reply]:
    X = decode_batch(service.codec(call.model), call.body, call.content_type)
    p = yield from service.predicting(call.model, X, NAME, call.request_id)
    return Reply(encode_batch(p))


PROTOCOL = Protocol(
    name=NAME,
    error_body=error_body,
    error_model=ErrorOut,
    endpoints=(
        Endpoint(
            "/predict/{model}",
            predict_one,
            Doc(
                "Predict one {model} record",
                tag="predict",
                replies={200: PredictionOut},
                errors=ERRORS,
                description="{description}\n\nReturns the predicted {predicted}.",
                body=one_body,
                schemas=lambda codec: [codec.record_model] if codec else [],
                per_model=True,
            ),
            limit="record",
        ),
        Endpoint(
            "/predict/{model}/batch",
            predict_batch,
            Doc(
                "Predict a batch of {model} records",
                tag="predict",
                replies={200: BatchOut},
                errors=ERRORS,
                description="Up to {limit} records in one call; results come back in order. "
                "{description}\n\nReturns the predicted {predicted}.",
                body=batch_body,
                schemas=lambda codec: [codec.record_model, codec.batch_model] if codec else [],
                per_model=True,
            ),
        ),
    ),
)

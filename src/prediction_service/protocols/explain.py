"""Explanations: ``POST /explain/<model>`` and ``/explain/<model>/batch`` take the native
protocol's bodies and answer the champion's prediction with each feature's exact
contribution. Logged and counted like predictions, under the protocol ``explain``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import Field

from prediction_service.protocols import native
from prediction_service.protocols.base import Call, Doc, Endpoint, Protocol, Reply
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.predictions import Prediction, PredictionService

NAME = "explain"


class ExplanationItemOut(native.Wire):
    prediction_id: str
    prediction: float | str
    probabilities: dict[str, float] | None = Field(
        default=None, description="Probability of each class (classifiers only)."
    )
    output: Literal["log-odds"] | None = Field(
        default=None, description="What a classifier's contributions explain (classifiers only)."
    )
    base_value: float | dict[str, float] = Field(
        description="The mean output over the training rows: the value (regressors), or per "
        "explained class its log-odds (classifiers; binary ones explain the second class)."
    )
    contributions: dict[str, float] | dict[str, dict[str, float]] = Field(
        description="Each feature's contribution (per explained class for classifiers); with "
        "base_value they add up to the prediction, or to raw_score."
    )
    raw_score: dict[str, float] | None = Field(
        default=None, description="Per explained class, the log-odds the model computed."
    )


class ExplanationOut(ExplanationItemOut):
    model: str
    registered_name: str
    version: str
    latency_ms: float


class ExplanationBatchOut(native.Wire):
    model: str
    registered_name: str
    version: str
    count: int
    explanations: list[ExplanationItemOut]
    latency_ms: float


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


Encode = Callable[[Prediction, np.ndarray, Sequence[str]], bytes]


def _handler(
    decode: Callable[[FeatureCodec, bytes, str | None], np.ndarray], encode: Encode
) -> Any:
    def handle(service: PredictionService, call: Call) -> Reply:
        codec = service.codec(call.model)
        X = decode(codec, call.body, call.content_type)
        p, contributions = service.explain(call.model, X, NAME, call.request_id)
        return Reply(encode(p, contributions, codec.spec.model_feature_names))

    return handle


DESCRIPTION = (
    "The champion's prediction and each feature's exact contribution: TreeSHAP for LightGBM "
    "forests, coefficient times the scaled feature for linear models behind a standard "
    "scaler; base_value plus the contributions is the prediction (regressors) or each "
    "explained class's log-odds (classifiers). Logged and counted like predictions, with "
    "protocol explain. 501 for a version without an exact explainer."
)
ERRORS = (*native.ERRORS, 501)

PROTOCOL = Protocol(
    name=NAME,
    error_body=native.error_body,
    error_model=native.ErrorOut,
    endpoints=(
        Endpoint(
            "/explain/{model}",
            _handler(native.decode_one, encode_explanation),
            Doc(
                "Explain one {model} record",
                tag="explain",
                replies={200: ExplanationOut},
                errors=ERRORS,
                description=DESCRIPTION,
                body=native.one_body,
                schemas=lambda codec: [codec.record_model] if codec else [],
                per_model=True,
            ),
            limit="record",
            inline=False,
        ),
        Endpoint(
            "/explain/{model}/batch",
            _handler(native.decode_batch, encode_explanations),
            Doc(
                "Explain a batch of {model} records",
                tag="explain",
                replies={200: ExplanationBatchOut},
                errors=ERRORS,
                description="Up to {limit} records in one call; results come back in order. "
                + DESCRIPTION,
                body=native.batch_body,
                schemas=lambda codec: [codec.record_model, codec.batch_model] if codec else [],
                per_model=True,
            ),
            inline=False,
        ),
    ),
)

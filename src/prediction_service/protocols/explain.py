"""Explanations: ``POST /explain/<model>`` and ``/explain/<model>/batch`` take the native
protocol's bodies and answer the champion's prediction with each feature's contribution
(``predictors/explainers.py``). Logged and counted like predictions, under the protocol ``explain``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import Field

from prediction_service.predictors.explainers import Explainer, additivity_error, tolerance
from prediction_service.predictors.shapley import Explanation
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
    method: Literal["tree_shap", "linear", "exact_shapley", "sampled_shapley"] = Field(
        description="How the contributions were computed: TreeSHAP (tree ensembles), the "
        "closed form (linear models), or interventional Shapley values over the version's "
        "background rows, exact up to 10 features and sampled beyond."
    )
    output: Literal["value", "log-odds", "probability"] = Field(
        description="What the contributions add up to: the predicted value (regressors), "
        "each explained class's log-odds (boosted and linear classifiers; binary ones explain "
        "the second class) or its probability (random forests, model-agnostic methods)."
    )
    base_value: float | dict[str, float] = Field(
        description="The output with no feature known: its mean over the training rows "
        "(per explained class for classifiers)."
    )
    contributions: dict[str, float] | dict[str, dict[str, float]] = Field(
        description="Each feature's contribution (per explained class for classifiers); with "
        "base_value they add up to output_value."
    )
    output_value: float | dict[str, float] = Field(
        description="The output the model computed for the row (per explained class)."
    )
    additivity_error: float = Field(
        description="The largest |base_value + contributions - output_value| of the row."
    )
    tolerance: float = Field(description="The bound additivity_error is checked against.")
    samples: int | None = Field(
        default=None, description="Model evaluations the estimate took (sampled_shapley only)."
    )
    standard_errors: dict[str, float] | dict[str, dict[str, float]] | None = Field(
        default=None, description="Each contribution's standard error (sampled_shapley only)."
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
    p: Prediction, row: int, e: Explanation, explainer: Explainer, features: Sequence[str]
) -> dict[str, Any]:
    """One row's explanation: regressors explain the value, classifiers each explained
    class's output (all classes, or the second of two)."""
    item: dict[str, Any] = {"prediction_id": p.ids[row], "prediction": p.values[row]}
    names = features[: explainer.n_features]
    values, output = e.values[row].tolist(), e.output[row].tolist()
    errors = e.errors[row].tolist() if e.errors is not None else None
    item["method"], item["output"] = explainer.method, explainer.output
    if p.classes is None:
        item["base_value"] = values[0][-1]
        item["contributions"] = dict(zip(names, values[0][:-1]))
        item["output_value"] = output[0]
        if errors is not None:
            item["standard_errors"] = dict(zip(names, errors[0]))
    else:
        assert p.probabilities is not None
        item["probabilities"] = dict(zip(p.classes, p.probabilities[row].tolist()))
        explained = p.classes[-len(values) :]  # all classes, or the positive one of two
        item["base_value"] = {k: v[-1] for k, v in zip(explained, values)}
        item["contributions"] = {k: dict(zip(names, v[:-1])) for k, v in zip(explained, values)}
        item["output_value"] = dict(zip(explained, output))
        if errors is not None:
            item["standard_errors"] = {k: dict(zip(names, v)) for k, v in zip(explained, errors)}
    item["additivity_error"] = float(additivity_error(e)[row])
    item["tolerance"] = float(tolerance(e.output)[row])
    if e.samples is not None:
        item["samples"] = e.samples
    return item


def encode_explanation(
    p: Prediction, e: Explanation, explainer: Explainer, features: Sequence[str]
) -> bytes:
    item = _explained(p, 0, e, explainer, features)
    head = {"model": p.model, "registered_name": p.registered_name, "version": p.version}
    return orjson.dumps({**head, **item, "latency_ms": p.latency_ms})


def encode_explanations(
    p: Prediction, e: Explanation, explainer: Explainer, features: Sequence[str]
) -> bytes:
    items = [_explained(p, i, e, explainer, features) for i in range(len(p))]
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


Encode = Callable[[Prediction, Explanation, Explainer, Sequence[str]], bytes]


def _handler(
    decode: Callable[[FeatureCodec, bytes, str | None], np.ndarray], encode: Encode
) -> Any:
    def handle(service: PredictionService, call: Call) -> Reply:
        codec = service.codec(call.model)
        X = decode(codec, call.body, call.content_type)
        p, explanation, explainer = service.explain(call.model, X, NAME, call.request_id)
        return Reply(encode(p, explanation, explainer, codec.spec.model_feature_names))

    return handle


DESCRIPTION = (
    "The champion's prediction and each feature's contribution: TreeSHAP for tree "
    "ensembles, coefficient times the scaled feature for linear models behind a standard "
    "scaler, interventional Shapley values over the version's background rows for any other "
    "model (exact up to 10 features, sampled with standard errors beyond). base_value plus "
    "the contributions is output_value, within tolerance. Logged and counted like "
    "predictions, with protocol explain. 501 for a version that cannot be explained."
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

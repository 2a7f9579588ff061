"""OpenAPI for the prediction lanes, which answer in front of FastAPI (``api/lanes.py``).

FastAPI documents the routes it serves; the lanes' operations are described here from the
same pydantic models the codec validates with, and merged into one document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from prediction_service.api.errors import protocol_of
from prediction_service.api.schemas import (
    ERROR_MEANING,
    BatchOut,
    ErrorOut,
    ExplanationBatchOut,
    ExplanationOut,
    MlflowError,
    MlflowPredictions,
    MlflowRequest,
    PredictionOut,
    V2Error,
    V2InferRequest,
    V2InferResponse,
)
from prediction_service.services import Services

_REF = "#/components/schemas/{model}"
_ERRORS = ERROR_MEANING


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(
    summary: str,
    operation_id: str,
    tag: str,
    body: dict[str, Any],
    reply: type[BaseModel],
    error: type[BaseModel],
    statuses: tuple[int, ...],
    description: str = "",
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "the prediction", "content": _json(_ref(reply))}
    }
    for status in statuses:
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(_ref(error))}
    op: dict[str, Any] = {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "operationId": operation_id,
        "requestBody": {"required": True, "content": body},
        "responses": responses,
    }
    if parameters:
        op["parameters"] = parameters
    return {"post": op}


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def lane_paths(services: Services) -> tuple[dict[str, Any], list[type[BaseModel]]]:
    """The lanes' path items, and the models their schemas refer to."""
    paths: dict[str, Any] = {}
    models: list[type[BaseModel]] = [
        PredictionOut, BatchOut, ExplanationOut, ExplanationBatchOut, ErrorOut, V2InferRequest,
        V2InferResponse, V2Error,
        MlflowRequest, MlflowPredictions, MlflowError,
    ]  # fmt: skip
    limit = services.settings.max_batch_size
    mlflow_body = {
        **_json(_ref(MlflowRequest)),
        "text/csv": {"schema": {"type": "string"}, "example": "a,b\n1.0,2.0\n"},
    }
    for name, codec in services.codecs.items():
        spec = codec.spec
        models += [codec.record_model, codec.batch_model]
        what = "class and class probabilities" if spec.task == "classification" else "value"
        native_errors = (404, 413, 415, 422, 503)
        explain_text = (
            "The champion's prediction and each feature's exact contribution: TreeSHAP for "
            "LightGBM forests, coefficient times the scaled feature for linear models behind a "
            "standard scaler; base_value plus the contributions is the prediction (regressors) "
            "or each explained class's log-odds (classifiers). Logged and counted like "
            "predictions, with protocol explain. 501 for a version without an exact explainer."
        )
        # Our own lanes: one record, or a batch, predicted or explained.
        for route, tag, verb, (one, batch), errors, text in (
            ("predict", "predict", "Predict", (PredictionOut, BatchOut), native_errors,
             f"{spec.description}\n\nReturns the predicted {what}."),
            ("explain", "explain", "Explain", (ExplanationOut, ExplanationBatchOut),
             (*native_errors, 501), explain_text),
        ):  # fmt: skip
            paths[f"/{route}/{name}"] = _operation(
                f"{verb} one {name} record", f"{route}_{name}", tag,
                _json(_ref(codec.record_model)), one, ErrorOut, errors, text,
            )  # fmt: skip
            paths[f"/{route}/{name}/batch"] = _operation(
                f"{verb} a batch of {name} records", f"{route}_{name}_batch", tag,
                _json(_ref(codec.batch_model)), batch, ErrorOut, errors,
                f"Up to {limit} records in one call; results come back in order. {text}",
            )  # fmt: skip
        v2_errors = (400, 404, 413, 415, 503)
        features = ", ".join(codec.names)
        v2_text = (
            f"Open Inference Protocol. Inputs: one tensor per feature ({features}), shape [N], "
            f"or one [N, {len(codec.names)}] tensor in that order. Triton's binary tensor "
            "extension is accepted (Inference-Header-Content-Length)."
        )
        paths[f"/v2/models/{name}/infer"] = _operation(
            f"Infer with {name} (V2)",
            f"v2_infer_{name}",
            "open inference protocol (v2)",
            _json(_ref(V2InferRequest)),
            V2InferResponse,
            V2Error,
            v2_errors,
            v2_text,
        )
        paths[f"/v2/models/{name}/versions/{{version}}/infer"] = _operation(
            f"Infer with one served version of {name} (V2)",
            f"v2_infer_{name}_version",
            "open inference protocol (v2)",
            _json(_ref(V2InferRequest)),
            V2InferResponse,
            V2Error,
            v2_errors,
            v2_text + " The version must be the champion or the challenger.",
            [_path_parameter("version", "a served registered version")],
        )
        paths[f"/models/{name}/invocations"] = _operation(
            f"Score {name} rows (MLflow scoring protocol)",
            f"invocations_{name}",
            "mlflow scoring protocol",
            mlflow_body,
            MlflowPredictions,
            MlflowError,
            (404, 413, 415, 422, 503),
            "dataframe_split, dataframe_records, instances or inputs as JSON, or text/csv.",
        )
    paths["/invocations"] = _operation(
        "Score rows; the model is the one whose features are the columns sent",
        "invocations",
        "mlflow scoring protocol",
        mlflow_body,
        MlflowPredictions,
        MlflowError,
        (413, 415, 422, 503),
        "As `mlflow models serve` answers: dataframe_split, dataframe_records, instances or "
        "inputs as JSON, or text/csv with a header row.",
    )
    return paths, models


def finish(schema: dict[str, Any], app: FastAPI, services: Services) -> None:
    """Make the document say what the service answers: our error bodies instead of FastAPI's,
    and authentication only where a scope is closed."""
    lanes, _ = lane_paths(services)
    secured: set[str] = set()
    for path, item in schema["paths"].items():
        protocol = protocol_of(path)
        shapes: dict[str, type[BaseModel]] = {
            "native": ErrorOut,
            "v2": V2Error,
            "mlflow": MlflowError,
        }
        error = shapes[protocol]
        for op in item.values():
            responses = op.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                code = 400 if protocol == "v2" else 422
                responses.setdefault(str(code), {"description": _ERRORS[code]})
                responses[str(code)]["content"] = _json(_ref(error))
            # the security scheme is named after the scope (api/auth.py)
            required = op.pop("security", None) or []
            scope = (
                "predict" if path in lanes else next(iter(required[0]), None) if required else None
            )
            if scope is None or services.access.is_open(scope):
                continue
            secured.add(scope)
            op["security"] = [{scope: []}]
            for code in (401, 403, 429):
                responses[str(code)] = {
                    "description": ERROR_MEANING[code],
                    "content": _json(_ref(error)),
                }
    components = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    components["securitySchemes"] = {
        scope: {
            "type": "http",
            "scheme": "bearer",
            "description": f"an API key with the {scope} scope (or an admin key)",
        }
        for scope in sorted(secured)
    }
    if not secured:
        del components["securitySchemes"]


def install(app: FastAPI, services: Services) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        paths, models = lane_paths(services)
        _, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
        schema["paths"] = {**paths, **schema.get("paths", {})}
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        finish(schema, app, services)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

"""One OpenAPI document: FastAPI's routes, and the protocols' endpoints from their declarations.

The endpoints answer in front of FastAPI (``api/endpoints.py``), so FastAPI cannot see them;
each endpoint's ``Doc`` describes its operation, with the request models the codecs
generate from the specs, and the two are merged. Then the document is made to say what the
service answers: our error bodies instead of FastAPI's, and authentication only where a
scope is closed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from prediction_service.access import AccessControl
from prediction_service.api.schemas import ERROR_MEANING
from prediction_service.protocols.base import Doc, Endpoint, Protocol
from prediction_service.serving.codec import FeatureCodec

_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": schema}}


def _fill(text: str, codec: FeatureCodec | None, limit: int) -> str:
    """A Doc text with its fields: the model's, when documented per model."""
    if codec is None:
        return text
    spec = codec.spec
    predicted = "class and class probabilities" if spec.task == "classification" else "value"
    return text.format(
        model=spec.name,
        features=", ".join(codec.names),
        n_features=len(codec.names),
        limit=limit,
        description=spec.description,
        predicted=predicted,
    )


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + "_".join(re.findall(r"[A-Za-z0-9]+", path))


def _operation(
    endpoint: Endpoint,
    protocol: Protocol,
    doc: Doc,
    codec: FeatureCodec | None,
    path: str,
    limit: int,
    models: Sequence[str],
) -> tuple[dict[str, Any], list[type[BaseModel]]]:
    """The operation and the models its schemas refer to."""
    responses: dict[str, Any] = {}
    refs: list[type[BaseModel]] = [protocol.error_model]
    for status, reply in doc.replies.items():
        meaning = "the answer" if status < 300 else ERROR_MEANING.get(status, "")
        content = _json(_ref(reply), doc.reply_media) if reply else {doc.reply_media: {}}
        responses[str(status)] = {"description": meaning, "content": content}
        refs += [reply] if reply else []
    for status in doc.errors:
        responses[str(status)] = {
            "description": ERROR_MEANING[status],
            "content": _json(_ref(protocol.error_model)),
        }
    op: dict[str, Any] = {
        "tags": [doc.tag],
        "summary": _fill(doc.summary, codec, limit),
        "description": _fill(doc.description, codec, limit),
        "operationId": _operation_id(endpoint.method, path),
        "responses": responses,
    }
    if doc.body is not None:
        op["requestBody"] = {"required": True, "content": doc.body(codec)}
        refs += list(doc.schemas(codec))
    parameters = []
    for name in endpoint.params:
        if codec is not None and name == "model":
            continue
        schema: dict[str, Any] = {"type": "string"}
        if name == "model":
            schema["enum"] = list(models)
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if parameters:
        op["parameters"] = parameters
    if endpoint.scope is not None:
        op["x-scope"] = endpoint.scope  # made a security requirement by finish(), or dropped
    return op, refs


def endpoint_paths(
    protocols: Sequence[Protocol], codecs: dict[str, FeatureCodec], limit: int
) -> tuple[dict[str, Any], list[type[BaseModel]]]:
    """Every documented HTTP endpoint's path item, and the models their schemas refer to.
    An endpoint whose body depends on the model is documented once per model."""
    paths: dict[str, Any] = {}
    refs: list[type[BaseModel]] = []
    models = sorted(codecs)
    for protocol in protocols:
        if protocol.transport != "http":
            continue
        for endpoint in protocol.endpoints:
            doc = endpoint.doc
            if doc is None:
                continue
            per_model: list[tuple[str, FeatureCodec | None]] = [(endpoint.path, None)]
            if doc.per_model and "{model}" in endpoint.path:
                per_model = [(endpoint.path.replace("{model}", m), codecs[m]) for m in models]
            for path, codec in per_model:
                op, used = _operation(endpoint, protocol, doc, codec, path, limit, models)
                paths.setdefault(path, {})[endpoint.method.lower()] = op
                refs += used
    return paths, list(dict.fromkeys(refs))


def finish(schema: dict[str, Any], access: AccessControl, error: type[BaseModel]) -> None:
    """Make the document say what the service answers: our error bodies instead of FastAPI's
    on its routes, and authentication only where a scope is closed."""
    secured: set[str] = set()
    for item in schema["paths"].values():
        for op in item.values():
            responses = op.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422")):  # FastAPI's own
                responses["422"] = {
                    "description": ERROR_MEANING[422],
                    "content": _json(_ref(error)),
                }
            # A FastAPI route names its scope in its security scheme (api/auth.py); an
            # endpoint in x-scope.
            required = op.pop("security", None) or []
            scope = op.pop("x-scope", None) or (next(iter(required[0]), None) if required else None)
            if scope is None or access.is_open(scope):
                continue
            secured.add(scope)
            op["security"] = [{scope: []}]
            shape = _error_ref(op) or _ref(error)
            for code in (401, 403, 429):
                responses[str(code)] = {
                    "description": ERROR_MEANING[code],
                    "content": _json(shape),
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


def _error_ref(op: dict[str, Any]) -> dict[str, str] | None:
    """The error shape an operation already documents (an endpoint's protocol's)."""
    for status, response in op.get("responses", {}).items():
        if status.startswith("4"):
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if schema:
                return dict(schema)
    return None


def install(
    app: FastAPI,
    protocols: Sequence[Protocol],
    codecs: dict[str, FeatureCodec],
    limit: int,
    access: AccessControl,
) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        paths, models = endpoint_paths(protocols, codecs, limit)
        _, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
        schema["paths"] = {**paths, **schema.get("paths", {})}
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        finish(schema, access, protocols[0].error_model)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

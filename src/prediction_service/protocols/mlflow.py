"""MLflow's scoring protocol (``mlflow models serve``): ``POST /invocations``.

JSON bodies hold exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs`` (and optionally ``params``, which these models do not take); ``text/csv`` bodies are
a header row and rows of numbers. The answer is ``{"predictions": [...]}``: values for
regressors, class names for classifiers, as the model's pyfunc ``predict`` gives.

At ``/invocations`` the model is the one whose features are exactly the columns sent; at
``/models/<model>/invocations`` it is named, and rows without column names are taken in the
spec's feature order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np
import orjson

from prediction_service.errors import (
    BatchTooLargeError,
    InvalidInputError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from prediction_service.protocols import native
from prediction_service.protocols.base import Call, Doc, Endpoint, Protocol, Reply
from prediction_service.serving.batching import Steps
from prediction_service.serving.codec import FeatureCodec, check_values, short
from prediction_service.serving.predictions import Prediction, PredictionService

NAME = "mlflow"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# MLflow's error codes (databricks_pb2.ErrorCode) for our statuses.
_ERROR_CODES = {
    401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST", 413: "BAD_REQUEST", 415: "BAD_REQUEST", 422: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE",
}  # fmt: skip


@dataclass(frozen=True)
class Payload:
    """What the body holds, before a model is chosen."""

    kind: str  # records | columns | matrix
    data: Any
    columns: list[str] | None  # the column names sent, if any


def _bad(message: str) -> InvalidInputError:
    return InvalidInputError(f"invalid input: {message}")


def decode(body: bytes, content_type: str | None, codecs: Mapping[str, FeatureCodec]) -> Payload:
    """What the body holds, for one of ``codecs``' models: the one in the path, or any.
    Nothing is parsed past what those models could take."""
    mime, _, options = (content_type or "application/json").partition(";")
    mime = mime.strip().lower()
    charset = options.partition("charset=")[2].strip().lower() or "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError(f"only UTF-8 bodies are accepted, not {charset}")
    max_rows = max(c.max_rows for c in codecs.values())
    if mime == "text/csv":
        return _decode_csv(body, codecs, max_rows)
    if mime != "application/json":
        raise UnsupportedMediaTypeError(
            f"content type {mime!r} is not accepted; send application/json or text/csv"
        )
    check_values(body, max(c.max_values for c in codecs.values()), f"{max_rows} rows")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    keys = [k for k in FORMATS if isinstance(doc, dict) and k in doc]
    if len(keys) != 1 or set(doc) - {keys[0], "params"}:
        raise _bad(
            "the body must be a JSON object with exactly one of the fields "
            f"{', '.join(FORMATS)} (and optionally params)"
        )
    key = keys[0]
    data = doc[key]
    if key == "dataframe_split":
        if type(data) is not dict or type(data.get("data")) is not list:
            raise _bad('dataframe_split needs "data": a list of rows (and "columns")')
        columns = data.get("columns")
        if columns is not None and not (
            type(columns) is list and all(isinstance(c, str) for c in columns)
        ):
            raise _bad("dataframe_split.columns must be a list of names")
        return Payload("matrix", data["data"], columns)
    if key == "dataframe_records":
        return _records(data, key)
    # instances and inputs: records, a mapping of columns, or rows of values
    if type(data) is dict:
        if all(type(v) is list for v in data.values()):
            return Payload("columns", data, list(data))
        return Payload("records", [data], list(data))  # one record
    if type(data) is list and data and all(type(r) is dict for r in data):
        return _records(data, key)
    return Payload("matrix", data, None)


def _records(data: Any, key: str) -> Payload:
    if type(data) is not list or not data or type(data[0]) is not dict:
        raise _bad(f"{key} must be a non-empty list of records")
    return Payload("records", data, list(data[0]))


def _takes(codecs: Mapping[str, FeatureCodec]) -> str:
    return "; ".join(f"{n}: {', '.join(c.names)}" for n, c in codecs.items())


def _decode_csv(body: bytes, codecs: Mapping[str, FeatureCodec], max_rows: int) -> Payload:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the CSV body is not UTF-8: {exc}") from None
    # Rows and columns are counted before any is parsed: the matrix is made for what the
    # header and the lines say, which a client could make terabytes.
    if max(text.count("\n"), text.count("\r")) > max_rows + 2:
        raise BatchTooLargeError(f"the CSV body has more than {max_rows} rows; split it up")
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": \r, \n, \r\n, quoted or not
    try:
        first = next(reader, [])
        width = max(len(c.names) for c in codecs.values())
        if len(first) > width:
            raise _bad(
                f"the CSV header has {len(first)} columns; the columns are a model's "
                f"features ({_takes(codecs)})"
            )
        rows = [first, *(r for r in reader if r)] if first else []
    except csv.Error as exc:
        raise _bad(f"the CSV body cannot be read: {exc}") from None
    if len(rows) < 2:
        raise _bad("a CSV body needs a header row and at least one row of values")
    header, values = [h.strip() for h in rows[0]], rows[1:]
    matrix = np.empty((len(values), len(header)), dtype=np.float64)
    for i, row in enumerate(values, 1):
        if len(row) != len(header):
            raise _bad(f"CSV row {i} has {len(row)} values for {len(header)} columns")
        for j, cell in enumerate(row):
            try:
                matrix[i - 1, j] = float(cell)
            except ValueError:
                raise _bad(f"CSV row {i}, column {header[j]!r}: {cell!r} is not a number") from None
    return Payload("matrix", matrix, header)


def choose_model(payload: Payload, codecs: Mapping[str, FeatureCodec]) -> str:
    """The one model whose features are exactly the columns sent."""
    if payload.columns is None:
        raise _bad(
            "rows without column names need the model in the path: /models/<model>/invocations"
        )
    sent = set(payload.columns)
    matches = [name for name, codec in codecs.items() if set(codec.names) == sent]
    if len(matches) == 1:
        return matches[0]
    sent_names = short(", ".join(sorted(sent)))
    raise _bad(f"the columns [{sent_names}] match no model's features exactly; {_takes(codecs)}")


def _where(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2:
        return f"row {loc[0]}: {loc[1]}"
    return "rows"


def features(codec: FeatureCodec, payload: Payload) -> np.ndarray:
    if payload.kind == "records":
        return codec.records(payload.data, where=_where)
    if payload.kind == "columns":
        return codec.columns(payload.data, where=_where)
    return codec.matrix(payload.data, payload.columns, where=_where)


def encode(p: Prediction) -> bytes:
    return orjson.dumps({"predictions": p.values})


def error_body(exc: ServiceError) -> dict[str, Any]:
    """MLflow's error shape (``MlflowException.serialize_as_json``)."""
    return {
        "error_code": _ERROR_CODES.get(exc.status_code, "INTERNAL_ERROR"),
        "message": exc.message,
    }


# -- wire schemas (documentation; decoding is by hand, above) ------------------------------
class MlflowSplit(native.Wire):
    columns: list[str] | None = None
    index: list[Any] | None = None
    data: list[list[float]]


class MlflowRequest(native.Wire):
    """Exactly one of the four fields."""

    dataframe_split: MlflowSplit | None = None
    dataframe_records: list[dict[str, float]] | None = None
    instances: list[Any] | dict[str, list[float]] | None = None
    inputs: list[Any] | dict[str, list[float]] | None = None
    params: dict[str, Any] | None = None


class MlflowPredictions(native.Wire):
    predictions: list[float | str]


class MlflowError(native.Wire):
    error_code: str
    message: str


# -- the endpoints -------------------------------------------------------------------------
def invocations(service: PredictionService, call: Call) -> Steps[Reply]:
    codecs = {call.model: service.codec(call.model)} if call.model else service.codecs
    payload = decode(call.body, call.content_type, codecs)
    model = call.model or choose_model(payload, service.codecs)
    X = features(service.codec(model), payload)
    p = yield from service.predicting(model, X, NAME, call.request_id)
    return Reply(encode(p))


def _ping(service: PredictionService, call: Call) -> Reply:
    return Reply(b"\n", status=503 if service.store.not_ready() else 200)


@cache
def _mlflow_version() -> bytes:
    return metadata.version("mlflow").encode()


def _version(service: PredictionService, call: Call) -> Reply:
    return Reply(_mlflow_version())


def _body(codec: FeatureCodec | None) -> dict[str, Any]:
    csv_example = {"schema": {"type": "string"}, "example": "a,b\n1.0,2.0\n"}
    return {**native.json_body(MlflowRequest), "text/csv": csv_example}


TAG = "mlflow scoring protocol"
PROTOCOL = Protocol(
    name=NAME,
    error_body=error_body,
    error_model=MlflowError,
    endpoints=(
        Endpoint(
            "/models/{model}/invocations",
            invocations,
            Doc(
                "Score {model} rows (MLflow scoring protocol)",
                tag=TAG,
                replies={200: MlflowPredictions},
                errors=(404, 413, 415, 422, 503),
                description="dataframe_split, dataframe_records, instances or inputs as JSON, "
                "or text/csv.",
                body=_body,
                schemas=lambda codec: [MlflowRequest],
                per_model=True,
            ),
        ),
        Endpoint(
            "/invocations",
            invocations,
            Doc(
                "Score rows; the model is the one whose features are the columns sent",
                tag=TAG,
                replies={200: MlflowPredictions},
                errors=(413, 415, 422, 503),
                description="As `mlflow models serve` answers: dataframe_split, "
                "dataframe_records, instances or inputs as JSON, or text/csv with a header row.",
                body=_body,
                schemas=lambda codec: [MlflowRequest],
            ),
        ),
        Endpoint(
            "/ping",
            _ping,
            Doc(
                "200 when every model is loaded, as `mlflow models serve` answers",
                tag=TAG,
                replies={200: None, 503: None},
            ),
            method="GET",
            scope=None,
            predicts=False,
        ),
        Endpoint(
            "/version",
            _version,
            Doc(
                "The MLflow version whose scoring protocol this speaks",
                tag=TAG,
                replies={200: None},
            ),
            method="GET",
            scope=None,
            predicts=False,
        ),
    ),
)

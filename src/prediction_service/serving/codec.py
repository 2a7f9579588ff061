"""One codec per model spec: records, columns or tensors in, the feature matrix out.

Every protocol unwraps its own envelope and hands the payload here, so the spec's rules
(exactly the spec's features, numbers and not strings or booleans, integers for integer
features, finite values inside each feature's range, at most ``max_rows`` rows) are checked
in one place, on whole arrays. Only a rejected input is explained, by the pydantic models
generated from the same spec (they also document the request bodies in OpenAPI); if pydantic
finds nothing to say, the codec's own reason is given.

The checks were written to accept exactly what the pydantic record model accepts; a test
sends valid and invalid bodies to both and compares.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from prediction_service.errors import BatchTooLargeError, FieldProblem, InvalidInputError
from prediction_service.specs import ModelSpec

_NUMBERS = frozenset({float, int})
# Field errors a 422 lists (the rest are counted), and how much of a client's input one
# quotes: enough to find it, never the whole of it.
MAX_FIELD_ERRORS = 20
QUOTE = 100
# Bodies up to this size are parsed without counting their values first.
_UNCOUNTED_BODY = 64 * 1024
# Names a location (pydantic's ``loc``, without "body") the way a protocol does.
Where = Callable[[tuple[Any, ...]], str]
_BODY_PARTS = ("body", "query", "path", "header")


def example_row(spec: ModelSpec, home: Path) -> dict[str, float]:
    """The first row of the spec's dataset, for OpenAPI examples (midpoints if unreadable)."""
    example = {f.name: (f.min + f.max) / 2 for f in spec.features}
    try:
        with spec.data_file(home).open(newline="") as fh:
            row = next(csv.DictReader(fh))
        example = {f.name: float(row[f.source_column]) for f in spec.features}
    except (OSError, StopIteration, KeyError, ValueError):
        pass
    return example


def record_model(spec: ModelSpec, example: Mapping[str, float]) -> type[BaseModel]:
    """One record of ``spec``'s features: finite numbers inside each feature's range."""
    fields: dict[str, Any] = {}
    for f in spec.features:
        kind = int if f.type == "int" else float
        fields[f.name] = (
            Annotated[
                kind,
                Field(
                    ge=f.min,
                    le=f.max,
                    strict=True,
                    allow_inf_nan=False,
                    description=f.description or None,
                    examples=[example[f.name]],
                ),
            ],
            ...,
        )
    return create_model(
        f"{camel(spec.name)}Record",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [dict(example)]}),
        **fields,
    )


def batch_model(spec: ModelSpec, record: type[BaseModel], max_rows: int) -> type[BaseModel]:
    return create_model(
        f"{camel(spec.name)}Batch",
        __config__=ConfigDict(extra="forbid"),
        records=(
            list[record],  # type: ignore[valid-type]
            Field(
                min_length=1,
                max_length=max_rows,
                description=f"1 to {max_rows} records; larger batches get 413.",
            ),
        ),
    )


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def field_errors(raw: Sequence[Mapping[str, Any]], field: Where) -> list[FieldProblem]:
    """Pydantic's errors as ours: ``{"field", "message", "type"[, "input"]}``, at most
    ``MAX_FIELD_ERRORS`` of them, each quoting the client's input short."""
    errors = []
    for e in raw[:MAX_FIELD_ERRORS]:
        loc = tuple(p for p in e["loc"] if p not in _BODY_PARTS)
        out = FieldProblem(field=short(field(loc)), message=short(e["msg"]), type=e["type"])
        if e["type"] == "json_invalid":  # its loc holds a character offset, not a field
            detail = (e.get("ctx") or {}).get("error", "")
            out["field"] = "body"
            out["message"] = (
                "empty; send a JSON object"
                if detail.startswith("EOF while parsing a value at line 1 column 0")
                else f"not valid JSON: {detail}"
            )
        elif "input" in e and e["type"] != "missing":
            out["input"] = _printable(e["input"])
        errors.append(out)
    if len(raw) > MAX_FIELD_ERRORS:
        errors.append(
            FieldProblem(
                field="body",
                message=f"and {len(raw) - MAX_FIELD_ERRORS} more problems",
                type="too_many_errors",
            )
        )
    return errors


def short(text: str, limit: int = QUOTE) -> str:
    """``text``, or its start and how much was left out: a client's input is quoted short."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"


def check_values(body: bytes, max_values: int, limit: str) -> None:
    """Refuse, before it is parsed, a JSON body holding more values than ``max_values``.

    Parsing turns every value into a Python object, so 16 MB of empty records (``{},``)
    became 2 GB of dicts before the row limit could be checked. In a JSON body every value
    but the last is followed by a comma, so commas count the values from above, at C
    speed (2 ms for 16 MB here)."""
    if len(body) > _UNCOUNTED_BODY and body.count(b",") >= max_values:
        raise BatchTooLargeError(f"the body holds more values than {limit}; split it up")


def dotted(loc: tuple[Any, ...]) -> str:
    """``("records", 3, "MedInc")`` -> ``records.3.MedInc``; the whole body is ``body``."""
    return ".".join(str(p) for p in loc) or "body"


def _printable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return short(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return short(repr(value))


class FeatureCodec:
    """The spec's request rules, for one record, many records, columns or a matrix."""

    def __init__(self, spec: ModelSpec, max_rows: int, example: Mapping[str, float] | None = None):
        self.spec = spec
        self.names: tuple[str, ...] = tuple(spec.feature_names)
        self.max_rows = max_rows
        self._n = len(self.names)
        self._name_set = frozenset(self.names)
        self._row: Callable[[Any], Any] = (
            itemgetter(*self.names) if self._n > 1 else (lambda r: (r[self.names[0]],))
        )
        self._rules = [(f.min, f.max, f.type == "int") for f in spec.features]
        self._lower = np.array([f.min for f in spec.features], dtype=np.float64)
        self._upper = np.array([f.max for f in spec.features], dtype=np.float64)
        self._ints = [j for j, f in enumerate(spec.features) if f.type == "int"]
        example = example or {f.name: (f.min + f.max) / 2 for f in spec.features}
        self.record_model = record_model(spec, example)
        self.batch_model = batch_model(spec, self.record_model, max_rows)
        self._one: TypeAdapter[Any] = TypeAdapter(self.record_model)
        self._many: TypeAdapter[Any] = TypeAdapter(
            Annotated[list[self.record_model], Field(min_length=1)]  # type: ignore[name-defined,arg-type]
        )
        self._batch: TypeAdapter[Any] = TypeAdapter(self.batch_model)

    @property
    def max_values(self) -> int:
        """Values a batch of this model can hold: every row's features, and some room for
        the envelope (names, shapes, parameters)."""
        return self.max_rows * (self._n + 1) + 1024

    def check_size(self, body: bytes) -> None:
        """A JSON batch body with more values than ``max_rows`` rows can hold is refused
        (413) before it is parsed (see ``check_values``)."""
        check_values(body, self.max_values, f"{self.max_rows} rows of {self._n} features")

    # -- one record ------------------------------------------------------------------
    def record(self, obj: Any, raw: bytes | None = None) -> np.ndarray:
        """One JSON object as a (1, features) matrix. ``raw``, the body it was parsed from,
        lets a rejection be explained from the original text (NaN, syntax errors)."""
        if type(obj) is dict and len(obj) == self._n:
            try:
                values = self._row(obj)
            except KeyError:
                values = None
            # Plain Python: for one row, numpy's per-call overhead costs more than the checks.
            if values is not None and self._valid_row(values):
                return np.array([values], dtype=np.float64)
        raise self._explain(self._one, obj, raw, dotted, "not a valid record")

    def row(self, values: Sequence[Any]) -> np.ndarray | None:
        """One row of values in the spec's feature order as a (1, features) matrix, or None
        when it is not one or a value breaks a rule (the caller's general path explains)."""
        if len(values) == self._n:
            row = list(values)
            if self._valid_row(row):
                return np.array([row], dtype=np.float64)
        return None

    def _valid_row(self, values: Sequence[Any]) -> bool:
        for v, (low, high, integer) in zip(values, self._rules):
            kind = type(v)
            if kind is float:
                if integer or not low <= v <= high:  # NaN fails both comparisons
                    return False
            elif kind is int:
                if not low <= v <= high:
                    return False
            else:
                return False
        return True

    # -- many records, columns, a matrix ---------------------------------------------
    def batch(self, doc: Any, raw: bytes | None = None) -> np.ndarray:
        """The native batch body, ``{"records": [...]}``."""
        if type(doc) is dict and len(doc) == 1 and "records" in doc:
            return self.records(doc["records"], lambda loc: dotted(("records", *loc)))
        raise self._explain(self._batch, doc, raw, dotted, 'expected {"records": [...]}')

    def records(self, items: Any, where: Where = dotted) -> np.ndarray:
        """A list of JSON objects as a (rows, features) matrix."""
        if type(items) is list and items:
            self._check_rows(items)
            try:
                rows = list(map(self._row, items))  # KeyError: missing; TypeError: not a dict
                if set(map(len, items)) == {self._n}:  # no extra keys
                    return self._matrix(rows)
            except (KeyError, TypeError, InvalidInputError):
                pass
        raise self._explain(self._many, items, None, where, "not a list of valid records")

    def columns(self, columns: Mapping[str, Any], where: Where = dotted) -> np.ndarray:
        """One sequence of values per feature (all the same length) as a matrix."""
        self._check_names(columns.keys())
        data = [columns[name] for name in self.names]
        lengths = {len(c) if isinstance(c, (list, np.ndarray)) else -1 for c in data}
        if len(lengths) != 1 or -1 in lengths:
            raise InvalidInputError(
                "invalid input: every feature needs a list of values, all of the same length"
            )
        self._check_rows(data[0])
        if all(isinstance(c, np.ndarray) for c in data):
            X = self._numeric(np.column_stack(data))
            if X is not None:
                return X
        else:
            try:
                return self._matrix(list(zip(*data)))
            except InvalidInputError:
                pass
        records = [dict(zip(self.names, row)) for row in zip(*data)]
        raise self._explain(self._many, records, None, where, "invalid values")

    def matrix(
        self,
        data: Any,
        columns: Sequence[str] | None = None,
        where: Where = dotted,
    ) -> np.ndarray:
        """Rows of values (lists, or a 2-D array) in the order of ``columns``, by default
        the spec's feature order."""
        order = list(range(self._n))
        if columns is not None:
            self._check_names(columns)
            position = {name: i for i, name in enumerate(columns)}
            order = [position[name] for name in self.names]
        self._check_rows(data)
        if isinstance(data, np.ndarray):
            if data.ndim != 2 or data.shape[1] != self._n:
                raise InvalidInputError(
                    f"invalid input: expected rows of {self._n} features, got shape "
                    f"{list(data.shape)}"
                )
            X = self._numeric(data[:, order])
            if X is not None:
                return X
            rows: list[Any] = data[:, order].tolist()
        else:
            if not all(isinstance(r, list) and len(r) == self._n for r in data):
                raise InvalidInputError(
                    f"invalid input: every row must be a list of {self._n} values "
                    f"({', '.join(self.names)})"
                )
            rows = [[r[i] for i in order] for r in data] if columns is not None else data
            try:
                return self._matrix(rows)
            except InvalidInputError:
                pass
        records = [dict(zip(self.names, row)) for row in rows]
        raise self._explain(self._many, records, None, where, "invalid values")

    # -- a table, row by row (offline scoring) ------------------------------------------
    def screen(self, X: np.ndarray, missing: np.ndarray, not_number: np.ndarray) -> np.ndarray:
        """Why each row of a table cannot be predicted (None where it can), by the rules a
        request is held to: a value for every feature, a finite number, an integer where
        the feature is one, inside the feature's range.

        ``X`` is (rows, features) float64 in the spec's order; ``missing`` and
        ``not_number`` mark the cells the reader found empty or could not read as a number
        (their ``X`` is NaN). A row's reason names every failing feature, without its
        value, so that reasons can be counted."""
        bad = missing | not_number | ~np.isfinite(X)
        with np.errstate(invalid="ignore"):
            bad |= (X < self._lower) | (X > self._upper)
            if self._ints:
                part = X[:, self._ints]
                bad[:, self._ints] |= part != np.floor(part)
        reasons = np.full(len(X), None, dtype=object)
        rows = np.flatnonzero(bad.any(axis=1))
        if len(rows) == 0:
            return reasons
        for i, row in zip(rows.tolist(), X[rows].tolist()):
            reasons[i] = "; ".join(
                f"{name}: {self._why(v, missing[i, j], not_number[i, j], self._rules[j])}"
                for j, (name, v) in enumerate(zip(self.names, row))
                if bad[i, j]
            )
        return reasons

    @staticmethod
    def _why(v: float, missing: bool, not_number: bool, rule: tuple[float, float, bool]) -> str:
        low, high, integer = rule
        if missing:
            return "missing"
        if not_number:
            return "not a number"
        if not math.isfinite(v):
            return "not finite"
        if v < low:
            return f"below the minimum {low:g}"
        if v > high:
            return f"above the maximum {high:g}"
        return "not an integer" if integer else "invalid"

    # -- checks ------------------------------------------------------------------------
    def _check_rows(self, rows: Any) -> None:
        if not isinstance(rows, (list, np.ndarray)) or len(rows) == 0:
            raise InvalidInputError("invalid input: expected a non-empty list of rows")
        if len(rows) > self.max_rows:
            raise BatchTooLargeError(
                f"batch of {len(rows)} records exceeds the limit of {self.max_rows}; split it up"
            )

    def _check_names(self, names: Any) -> None:
        given = list(names)
        if set(given) == self._name_set and len(given) == self._n:
            return
        missing = [n for n in self.names if n not in given]
        extra = [n for n in given if n not in self._name_set]
        parts = [
            f"missing {missing}" if missing else "",
            f"unexpected {short(str(extra))}" if extra else "",
        ]
        if not missing and not extra:
            parts = ["duplicated names"]
        raise InvalidInputError(
            f"invalid input: {self.spec.name} takes exactly the features "
            f"{list(self.names)}: " + ", ".join(p for p in parts if p)
        )

    def _matrix(self, rows: list[Any]) -> np.ndarray:
        """Lists of JSON values -> checked matrix; InvalidInputError names no field (the
        caller explains)."""
        kinds = set(map(type, itertools.chain.from_iterable(rows)))
        if not kinds <= _NUMBERS:
            raise InvalidInputError("invalid input: values must be numbers")  # str, bool, None
        try:
            X = np.array(rows, dtype=np.float64)
        except (OverflowError, ValueError) as exc:
            raise InvalidInputError(f"invalid input: {exc}") from None
        if self._ints and float in kinds:
            for j in self._ints:
                if any(type(r[j]) is not int for r in rows):
                    raise InvalidInputError("invalid input: integer features need integers")
        if not self._in_range(X):
            raise InvalidInputError("invalid input: values outside the valid range")
        return X

    def _numeric(self, data: np.ndarray) -> np.ndarray | None:
        """A numeric array (from a binary tensor) as a checked float64 matrix, or None."""
        if data.dtype.kind not in "fiu":
            return None
        if len(data) == 1 and not self._ints:
            # One row: plain Python checks cost ~4 us where numpy's reductions cost ~20.
            row = data[0].tolist()
            return np.array([row], dtype=np.float64) if self._valid_row(row) else None
        X = np.ascontiguousarray(data, dtype=np.float64)
        if self._ints and data.dtype.kind == "f":
            part = X[:, self._ints]
            if not np.array_equal(part, np.floor(part)):
                return None
        return X if self._in_range(X) else None

    def _in_range(self, X: np.ndarray) -> bool:
        # NaN compares False, so it fails the range check too.
        return bool((X >= self._lower).all() and (X <= self._upper).all())

    @staticmethod
    def _explain(
        validator: TypeAdapter[Any], obj: Any, raw: bytes | None, where: Where, fallback: str
    ) -> InvalidInputError:
        try:
            if raw is not None:
                validator.validate_json(raw)
            else:
                validator.validate_python(obj)
        except ValidationError as exc:
            return InvalidInputError.from_fields(field_errors(exc.errors(), where))
        return InvalidInputError(f"invalid input: {fallback}")

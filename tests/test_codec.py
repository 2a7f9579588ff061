"""The codec of each spec: every shipped row passes, bad values do not, and it accepts exactly
what the pydantic models generated from the same spec accept."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from prediction_service.errors import BatchTooLargeError, InvalidInputError
from prediction_service.serving.codec import FeatureCodec, batch_model, example_row, record_model
from prediction_service.specs import ModelSpec
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["housing", "iris"])
def test_every_row_of_the_shipped_dataset_validates(specs: dict[str, ModelSpec], name: str) -> None:
    spec = specs[name]
    model = record_model(spec, example_row(spec, ROOT))
    frame = pd.read_csv(spec.data_file(ROOT))
    columns = {f.source_column: f.name for f in spec.features}
    rows = frame[list(columns)].rename(columns=columns).to_dict(orient="records")
    for row in rows:
        model.model_validate(row)
    assert len(rows) == {"housing": 20640, "iris": 150}[name]


def test_example_is_the_first_dataset_row(specs: dict[str, ModelSpec]) -> None:
    assert example_row(specs["iris"], ROOT) == {
        "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2,
    }  # fmt: skip


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1.0", None, 10.5, [1.0]])
def test_rejected_values(specs: dict[str, ModelSpec], value: object) -> None:
    spec = specs["iris"]
    model = record_model(spec, example_row(spec, ROOT))
    row = {"sepal_length": value, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    with pytest.raises(ValidationError) as info:
        model.model_validate(row)
    assert info.value.errors()[0]["loc"] == ("sepal_length",)


def _batch_bodies(spec: ModelSpec, good: dict[str, Any]) -> list[bytes]:
    """Valid and invalid batch bodies, as JSON text (some are not valid JSON objects at all)."""
    first, second = spec.features[0], spec.features[1]
    variants: list[Any] = [
        {"records": [good]},
        {"records": [good] * 50},
        {"records": [{**good, first.name: int(first.max)}]},  # an int for a float feature
        {"records": [{**good, first.name: first.min}, {**good, second.name: second.max}]},
        {"records": [{**good, first.name: first.max + 1e-9}]},
        {"records": [{**good, second.name: second.min - 1}]},
        {"records": [{**good, first.name: True}]},
        {"records": [{**good, first.name: str(good[first.name])}]},
        {"records": [{**good, first.name: None}]},
        {"records": [{**good, first.name: [1.0]}]},
        {"records": [{k: v for k, v in good.items() if k != first.name}]},
        {"records": [{**good, "extra": 1.0}]},
        {"records": [good, [1.0, 2.0]]},
        {"records": [good, "x"]},
        {"records": []},
        {"records": [good] * 11},  # over this test's limit of 10
        {"records": good},
        {"records": [good], "other": 1},
        [good],
    ]
    bodies = [orjson.dumps(v) for v in variants]
    big = orjson.dumps({"records": [good]}).replace(orjson.dumps(good[first.name]), b"1e999", 1)
    return [*bodies, big, b'{"records": [', b"NaN"]


def _decode(codec: FeatureCodec, body: bytes) -> np.ndarray | None:
    try:
        return codec.batch(orjson.loads(body), raw=body)
    except orjson.JSONDecodeError:
        return None
    except (InvalidInputError, BatchTooLargeError):
        return None


@pytest.mark.parametrize("name", ["housing", "iris"])
def test_the_codec_accepts_exactly_what_the_batch_model_accepts(
    specs: dict[str, ModelSpec], name: str
) -> None:
    spec = specs[name]
    good = example_row(spec, ROOT)
    codec = FeatureCodec(spec, max_rows=10, example=good)
    batch = batch_model(spec, record_model(spec, good), 10_000)
    for body in _batch_bodies(spec, good):
        X = _decode(codec, body)
        try:
            parsed = batch.model_validate_json(body)
        except ValidationError:
            assert X is None, body
            continue
        records = parsed.records  # type: ignore[attr-defined]
        if len(records) > 10:  # the lane answers 413 for these
            assert X is None
            continue
        assert X is not None, body
        expected = [[getattr(r, f) for f in spec.feature_names] for r in records]
        np.testing.assert_array_equal(X, np.array(expected, dtype=np.float64))


@pytest.mark.parametrize("name", ["housing", "iris"])
def test_one_record_accepted_exactly_when_the_record_model_accepts_it(
    specs: dict[str, ModelSpec], name: str
) -> None:
    spec = specs[name]
    good = example_row(spec, ROOT)
    codec = FeatureCodec(spec, max_rows=10, example=good)
    for body in _batch_bodies(spec, good):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        records = doc.get("records") if isinstance(doc, dict) else None
        for record in records if isinstance(records, list) else [doc]:
            raw = orjson.dumps(record)
            # The same values as a bare row (gRPC's one-row read): never looser than a record
            in_order = type(record) is dict and list(record) == list(spec.feature_names)
            row = codec.row(list(record.values())) if in_order else None
            try:
                expected = codec.record_model.model_validate_json(raw)
            except ValidationError as exc:
                assert row is None, record
                with pytest.raises(InvalidInputError) as info:
                    codec.record(record, raw)
                # pydantic explains, so the codec's message names the same fields
                fields = {".".join(map(str, e["loc"])) or "body" for e in exc.errors()}
                assert {e["field"] for e in info.value.errors or []} == fields
                continue
            X = codec.record(record, raw)
            np.testing.assert_array_equal(X[0], [getattr(expected, f) for f in spec.feature_names])
            if row is not None:
                np.testing.assert_array_equal(row, X)
    assert codec.row(list(good.values())) is not None
    assert codec.row(list(good.values())[:-1]) is None


def test_columns_and_matrices_take_the_same_rules(specs: dict[str, ModelSpec]) -> None:
    spec = specs["iris"]
    codec = FeatureCodec(spec, max_rows=3)
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    columns = {name: [r[j] for r in rows] for j, name in enumerate(spec.feature_names)}
    expected = np.array(rows)
    np.testing.assert_array_equal(codec.columns(columns), expected)
    np.testing.assert_array_equal(codec.matrix(rows), expected)
    np.testing.assert_array_equal(
        codec.matrix(np.array(rows, dtype=np.float32)), expected.astype(np.float32)
    )
    shuffled = list(reversed(spec.feature_names))
    np.testing.assert_array_equal(codec.matrix([r[::-1] for r in rows], shuffled), expected)
    with pytest.raises(InvalidInputError, match=r"row 1: petal_width: Input should be less than"):
        codec.columns(
            {**columns, "petal_width": [0.2, 9.0]}, where=lambda loc: f"row {loc[0]}: {loc[1]}"
        )
    with pytest.raises(
        InvalidInputError, match="missing \\['petal_width'\\], unexpected \\['colour'\\]"
    ):
        codec.columns(
            {**{k: v for k, v in columns.items() if k != "petal_width"}, "colour": [1, 2]}
        )
    with pytest.raises(InvalidInputError, match="sepal_length: Input should be a finite number"):
        codec.matrix(np.array([[np.nan, 3.5, 1.4, 0.2]]))
    with pytest.raises(InvalidInputError, match="Input should be a valid number"):
        codec.matrix([[5.1, "3.5", 1.4, 0.2]])
    with pytest.raises(BatchTooLargeError, match="batch of 4 records exceeds the limit of 3"):
        codec.matrix(rows * 2)
    with pytest.raises(InvalidInputError, match="non-empty"):
        codec.matrix([])

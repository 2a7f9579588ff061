"""Request models generated from specs: every shipped row passes, bad values do not."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from prediction_service.api.fastpath import BatchTarget
from prediction_service.api.schemas import batch_model, example_row, record_model
from prediction_service.specs import ModelSpec
from tests.conftest import ROOT


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


@pytest.mark.parametrize("name", ["housing", "iris"])
def test_the_batch_fast_lane_accepts_exactly_what_the_batch_model_accepts(
    specs: dict[str, ModelSpec], name: str
) -> None:
    spec = specs[name]
    good = example_row(spec, ROOT)
    record = record_model(spec, good)
    batch = batch_model(spec, record, max_size=10)
    lane = BatchTarget(name, spec, max_rows=10, route=None)  # type: ignore[arg-type]
    for body in _batch_bodies(spec, good):
        X = lane.parse(body)
        try:
            parsed = batch.model_validate_json(body)
        except ValidationError:
            assert X is None, body
            continue
        records = parsed.records  # type: ignore[attr-defined]
        if len(records) > 10:  # the route answers 413 for these
            assert X is None
            continue
        assert X is not None, body
        expected = [[getattr(r, f) for f in spec.feature_names] for r in records]
        np.testing.assert_array_equal(X, np.array(expected, dtype=np.float64))

"""Request models generated from specs: every shipped row passes, bad values do not."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from prediction_service.api.schemas import example_row, record_model
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

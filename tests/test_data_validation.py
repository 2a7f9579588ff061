"""Bad CSVs stop training with a message naming the columns and how many rows fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prediction_service.data import load_dataset
from prediction_service.errors import DataValidationError
from prediction_service.specs import ModelSpec
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture
def iris_frame() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "iris_raw.csv")


def _problems(spec: ModelSpec, frame: pd.DataFrame, tmp_path: Path) -> str:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as info:
        load_dataset(spec, path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_valid_iris_maps_codes_to_names(specs: dict[str, ModelSpec]) -> None:
    ds = load_dataset(specs["iris"], ROOT / "data" / "iris_raw.csv")
    assert list(ds.X.columns) == specs["iris"].feature_names
    assert set(ds.y) == {"setosa", "versicolor", "virginica"}
    assert len(ds.digest) == 64


def test_missing_column(
    specs: dict[str, ModelSpec], iris_frame: pd.DataFrame, tmp_path: Path
) -> None:
    msg = _problems(specs["iris"], iris_frame.drop(columns="petal width (cm)"), tmp_path)
    assert "missing columns: petal width (cm)" in msg


def test_nan_and_infinite(
    specs: dict[str, ModelSpec], iris_frame: pd.DataFrame, tmp_path: Path
) -> None:
    iris_frame.loc[[3, 7, 9], "sepal width (cm)"] = np.nan
    iris_frame.loc[[1], "petal length (cm)"] = np.inf
    msg = _problems(specs["iris"], iris_frame, tmp_path)
    assert "column 'sepal width (cm)': 3 rows are empty or NaN" in msg
    assert "column 'petal length (cm)': 1 rows are infinite" in msg


def test_out_of_range(
    specs: dict[str, ModelSpec], iris_frame: pd.DataFrame, tmp_path: Path
) -> None:
    iris_frame.loc[[0, 1], "sepal length (cm)"] = [-1.0, 42.0]
    msg = _problems(specs["iris"], iris_frame, tmp_path)
    assert "column 'sepal length (cm)': 2 rows outside the valid range [0.0, 10.0]" in msg


def test_wrong_dtype(specs: dict[str, ModelSpec], iris_frame: pd.DataFrame, tmp_path: Path) -> None:
    iris_frame["petal width (cm)"] = iris_frame["petal width (cm)"].astype(object)
    iris_frame.loc[[5, 6], "petal width (cm)"] = "wide"
    msg = _problems(specs["iris"], iris_frame, tmp_path)
    assert "column 'petal width (cm)': 2 rows are not numbers" in msg
    assert "'wide'" in msg


def test_too_few_rows_and_absent_class(
    specs: dict[str, ModelSpec], iris_frame: pd.DataFrame, tmp_path: Path
) -> None:
    msg = _problems(specs["iris"], iris_frame[iris_frame.target < 2].head(20), tmp_path)
    assert "20 rows, fewer than the minimum of 30" in msg
    assert "classes never present: versicolor, virginica" in msg


def test_unknown_class_code(
    specs: dict[str, ModelSpec], iris_frame: pd.DataFrame, tmp_path: Path
) -> None:
    iris_frame.loc[0, "target"] = 7
    msg = _problems(specs["iris"], iris_frame, tmp_path)
    assert "1 rows have a class code outside 0..2" in msg


def test_every_problem_reported_at_once(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").head(2000)
    frame.loc[0, "MedInc"] = np.nan
    frame.loc[1, "Latitude"] = 50.0
    msg = _problems(specs["housing"], frame, tmp_path)
    assert "'MedInc': 1 rows are empty or NaN" in msg
    assert "'Latitude': 1 rows outside" in msg


def test_missing_file(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        load_dataset(specs["iris"], tmp_path / "nope.csv")

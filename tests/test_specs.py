"""Model specs: the shipped ones are valid, malformed ones name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prediction_service.data import load_dataset
from prediction_service.errors import SpecError
from prediction_service.specs import ModelSpec, load_spec, load_specs
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_shipped_specs(specs: dict[str, ModelSpec]) -> None:
    assert {s.registered_name for s in specs.values()} == {
        "CaliforniaHousingBestModel",
        "IrisBestModel",
    }
    assert specs["iris"].target.classes == ["setosa", "versicolor", "virginica"]
    assert specs["housing"].feature_names == [
        "MedInc", "HouseAge", "AveRooms", "AveBedrms",
        "Population", "AveOccup", "Latitude", "Longitude",
    ]  # fmt: skip
    assert specs["iris"].feature_names == [
        "sepal_length", "sepal_width", "petal_length", "petal_width",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["housing", "iris"])
def test_every_shipped_row_is_inside_the_spec_ranges(
    specs: dict[str, ModelSpec], name: str
) -> None:
    spec = specs[name]
    dataset = load_dataset(spec, spec.data_file(ROOT))
    assert len(dataset) == {"housing": 20640, "iris": 150}[name]
    for feat in spec.features:
        col = dataset.X[feat.name]
        assert col.min() >= feat.min and col.max() <= feat.max, feat.name


def _write(tmp_path: Path, changes: dict[str, object]) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "models" / "iris.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"task": "clustering"}, "task", "regression"),
        ({"registered_name": _DELETE}, "registered_name", "Field required"),
        ({"features.0.min": 20.0}, "features.0", "min < max"),
        ({"features.1.name": "sepal_length"}, "features", "duplicate"),
        ({"candidates.0.estimator": "deep_forest"}, "candidates[0].estimator", "unknown estimator"),
        ({"candidates.0.estimator": "ridge"}, "candidates[0].estimator", "regression"),
        ({"selection_metric": "rmse"}, "selection_metric", "not a classification metric"),
        ({"target.classes": _DELETE}, "target.classes", "class names"),
        ({"split.test_size": 1.5}, "split.test_size", "less than 1"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        (
            {"derived_features": [{"name": "area", "weights": {"sepal_size": 1.0}}]},
            "derived_features[0].weights",
            "['sepal_size'] are not features of this spec",
        ),
        (
            {"derived_features": [{"name": "sepal_length", "weights": {"sepal_width": 1.0}}]},
            "features and derived_features",
            "duplicate names ['sepal_length']",
        ),
        (
            {"monitoring": {"live_quality": {"rmse": {"max": 1.0}}}},
            "monitoring.live_quality.rmse",
            "measures ['accuracy']",
        ),
    ],
)
def test_malformed_spec_names_file_and_field(
    tmp_path: Path, changes: dict[str, object], field: str, words: str
) -> None:
    path = _write(tmp_path, changes)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
    assert words in message


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(bad)


def test_empty_spec_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no \\*.yaml"):
        load_specs(tmp_path)

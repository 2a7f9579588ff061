"""The shipped datasets are the canonical ones: checked against data/SHA256SUMS."""

from __future__ import annotations

import pytest

from prediction_service.data import file_sha256
from prediction_service.specs import load_specs
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

SUMS = dict(
    reversed(line.split())
    for line in (ROOT / "data" / "SHA256SUMS").read_text().splitlines()
    if line
)


def test_sums_cover_every_shipped_spec_s_dataset() -> None:
    specs = load_specs(ROOT / "config" / "models").values()
    assert set(SUMS) == {spec.data_file(ROOT).name for spec in specs}


@pytest.mark.parametrize("name", sorted(SUMS))
def test_dataset_matches_recorded_sha256(name: str) -> None:
    assert file_sha256(ROOT / "data" / name) == SUMS[name]


def test_row_counts() -> None:
    lines = {n: (ROOT / "data" / n).read_text().count("\n") - 1 for n in SUMS}
    assert lines == {"housing_raw.csv": 20640, "iris_raw.csv": 150}

"""The shipped datasets are the canonical ones: checked against data/SHA256SUMS."""

from __future__ import annotations

import pytest

from prediction_service.data import file_sha256
from tests.conftest import ROOT

SUMS = dict(
    reversed(line.split())
    for line in (ROOT / "data" / "SHA256SUMS").read_text().splitlines()
    if line
)


def test_sums_cover_both_datasets() -> None:
    assert set(SUMS) == {"housing_raw.csv", "iris_raw.csv"}


@pytest.mark.parametrize("name", sorted(SUMS))
def test_dataset_matches_recorded_sha256(name: str) -> None:
    assert file_sha256(ROOT / "data" / name) == SUMS[name]


def test_row_counts() -> None:
    lines = {n: (ROOT / "data" / n).read_text().count("\n") - 1 for n in SUMS}
    assert lines == {"housing_raw.csv": 20640, "iris_raw.csv": 150}

"""The drift statistics the service computes without scipy agree with scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from prediction_service.serving.monitoring import ks_pvalue

pytestmark = pytest.mark.unit

rng = np.random.default_rng(7)


@pytest.mark.parametrize(
    ("n_sample", "n_reference", "shift"),
    [
        (1000, 1000, 0.0),
        (1000, 1000, 0.05),
        (500, 1000, 0.1),
        (200, 1000, 0.2),
        (100, 1000, 0.0),
        (5000, 1000, 0.02),
        (1000, 1000, 0.5),
    ],
)
def test_ks_pvalue_is_close_to_scipy(n_sample: int, n_reference: int, shift: float) -> None:
    sample = rng.normal(shift, 1.0, n_sample)
    reference = np.sort(rng.normal(0.0, 1.0, n_reference))
    expected = stats.ks_2samp(sample, reference).pvalue
    assert ks_pvalue(sample, reference) == pytest.approx(expected, abs=0.01)


def test_ks_pvalue_separates_drift_from_noise() -> None:
    reference = rng.uniform(0, 10, 1000)
    assert ks_pvalue(rng.uniform(0, 10, 1000), reference) > 0.01
    assert ks_pvalue(rng.uniform(0, 10, 1000) * 3, reference) < 1e-12
    assert ks_pvalue(reference, reference) == 1.0

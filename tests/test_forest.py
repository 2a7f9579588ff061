"""The native forest kernel gives LightGBM's own answers, bit for bit, or is not used."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from prediction_service.predictors import forest as forest_module
from prediction_service.predictors.forest import Forest
from prediction_service.predictors.portable import make_predictor

pytestmark = pytest.mark.unit

rng = np.random.default_rng(1)
X = rng.normal(size=(3000, 6))
y_reg = X[:, 0] * 2 - X[:, 1] ** 2 + np.sin(X[:, 2]) + rng.normal(0, 0.1, len(X))
y_multi = np.digitize(X[:, 0] + X[:, 3], [-0.7, 0.7])
y_bin = (X[:, 2] * X[:, 4] > 0).astype(int)


def test_the_kernel_is_built() -> None:
    # `pip install -e .` compiles it; without a C compiler every LightGBM test below would
    # silently measure LightGBM against itself.
    assert forest_module._kernel() is not None


@pytest.mark.parametrize(
    ("model", "y"),
    [
        (lgb.LGBMRegressor(n_estimators=60, num_leaves=31, verbose=-1), y_reg),
        (lgb.LGBMRegressor(n_estimators=40, max_depth=4, num_leaves=15, verbose=-1), y_reg),
        (lgb.LGBMClassifier(n_estimators=40, verbose=-1), y_bin),
        (lgb.LGBMClassifier(n_estimators=30, verbose=-1), y_multi),
    ],
    ids=["regression", "regression-depth-4", "binary", "multiclass"],
)
def test_matches_lightgbm_exactly(model: lgb.LGBMModel, y: np.ndarray) -> None:
    model.fit(X[:2000], y[:2000])
    forest = Forest.from_lightgbm(model.booster_)
    assert forest is not None
    rows = X[2000:]  # 1,000 rows: split over threads; then one row; then a few
    expected = model.booster_.predict(rows)
    for part in (slice(None), slice(0, 1), slice(5, 12)):
        got = forest.predict(rows[part])
        np.testing.assert_allclose(got, expected[part], rtol=1e-12, atol=1e-15)
    if isinstance(model, lgb.LGBMRegressor):  # same comparisons, same summation order
        assert np.array_equal(forest.predict(rows), expected)


def test_unsupported_models_are_refused() -> None:
    cats = np.column_stack([rng.integers(0, 5, len(X)), X[:, 1:]])
    model = lgb.LGBMRegressor(n_estimators=10, verbose=-1)
    model.fit(cats, y_reg, categorical_feature=[0])
    assert Forest.from_lightgbm(model.booster_) is None  # categorical splits
    rf = lgb.LGBMRegressor(
        boosting_type="rf", n_estimators=5, subsample=0.5, subsample_freq=1, verbose=-1
    ).fit(X, y_reg)
    assert Forest.from_lightgbm(rf.booster_) is None  # averaged, not summed


def test_rows_with_nan_are_refused() -> None:
    train = X.copy()
    train[::7, 0] = np.nan  # splits learn where missing values go: the kernel does not
    model = lgb.LGBMRegressor(n_estimators=30, verbose=-1).fit(train, y_reg)
    predict, kind = make_predictor(model, "regression", X[:10])
    assert kind == "direct"
    rows = X[:600].copy()
    np.testing.assert_array_equal(predict(rows), model.booster_.predict(rows))
    rows[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict(rows)

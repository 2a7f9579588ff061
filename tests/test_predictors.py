"""Fast predictors compute exactly what the estimators compute, or fall back to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prediction_service import shortcuts
from prediction_service.predictors import explainers
from prediction_service.predictors.portable import (
    estimator_predict,
    from_bundle,
    make_predictor,
    to_bundle,
)
from prediction_service.training.build import build_estimator

pytestmark = pytest.mark.unit

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 5))
y_reg = X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + rng.normal(0, 0.1, 300)
y_multi = np.array(["a", "b", "c"])[np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5])]
y_bin = np.where(X[:, 2] > 0, "yes", "no")


@pytest.mark.parametrize(
    ("estimator", "params", "y", "task", "kind"),
    [
        ("ridge", {"alpha": 1.0}, y_reg, "regression", "direct"),
        ("lightgbm_regressor", {"n_estimators": 30}, y_reg, "regression", "direct"),
        ("logistic_regression", {}, y_multi, "classification", "direct"),
        ("logistic_regression", {}, y_bin, "classification", "direct"),
        ("lightgbm_classifier", {"n_estimators": 30}, y_multi, "classification", "direct"),
        ("lightgbm_classifier", {"n_estimators": 30}, y_bin, "classification", "direct"),
        # Every estimator the catalog can train has a portable form.
        ("random_forest_regressor", {"n_estimators": 5}, y_reg, "regression", "direct"),
        ("random_forest_classifier", {"n_estimators": 5}, y_multi, "classification", "direct"),
        ("random_forest_classifier", {"n_estimators": 5}, y_bin, "classification", "direct"),
        ("hist_gradient_boosting_regressor", {"max_iter": 20}, y_reg, "regression", "direct"),
        ("hist_gradient_boosting_classifier", {"max_iter": 20}, y_multi, "classification",
         "direct"),
        ("hist_gradient_boosting_classifier", {"max_iter": 20}, y_bin, "classification",
         "direct"),
        ("k_neighbors_classifier", {}, y_multi, "classification", "direct"),
        ("k_neighbors_classifier", {"weights": "distance"}, y_bin, "classification", "direct"),
    ],
)  # fmt: skip
def test_fast_path_matches_the_estimator(
    estimator: str, params: dict[str, Any], y: np.ndarray, task: str, kind: str
) -> None:
    model = build_estimator(estimator, params, seed=0).fit(X[:200], y[:200])
    predict, got_kind = make_predictor(model, task, X[:10])
    assert got_kind == kind
    np.testing.assert_allclose(predict(X[200:]), estimator_predict(model, task)(X[200:]), rtol=1e-9)
    np.testing.assert_allclose(predict(X[200:201]), estimator_predict(model, task)(X[200:201]))
    # Training rows too: a row's own point (distance 0), and thresholds met exactly.
    np.testing.assert_allclose(predict(X[:50]), estimator_predict(model, task)(X[:50]), rtol=1e-9)


@pytest.mark.parametrize(
    "estimator", ["hist_gradient_boosting_regressor", "k_neighbors_classifier"]
)
def test_with_the_shortcuts_off_the_estimator_serves(estimator: str) -> None:
    """Their portable form reads scikit-learn's internals (shortcuts.py): off, the estimator."""
    y = y_reg if estimator.endswith("regressor") else y_multi
    task = "regression" if estimator.endswith("regressor") else "classification"
    model = build_estimator(estimator, {}, seed=0).fit(X[:200], y[:200])
    shortcuts.configure(False)
    try:
        assert make_predictor(model, task, X[:10])[1] == "estimator"
    finally:
        shortcuts.configure(True)


def test_a_wrong_fast_path_falls_back_to_the_estimator() -> None:
    model = build_estimator("ridge", {}, seed=0).fit(X, y_reg)
    model.steps[-1][1].coef_ = model.steps[-1][1].coef_ * 1.0  # still right: direct
    assert make_predictor(model, "regression", X[:5])[1] == "direct"

    class Tampered:
        coef_ = np.ones(5)
        intercept_ = 0.0

        def predict(self, rows: np.ndarray) -> np.ndarray:
            return rows.sum(axis=1) + 1.0  # disagrees with coef_/intercept_

    Tampered.__name__ = "Ridge"
    assert make_predictor(Tampered(), "regression", X[:5])[1] == "estimator"


@pytest.mark.parametrize(
    ("estimator", "params", "y", "task"),
    [
        ("ridge", {"alpha": 1.0}, y_reg, "regression"),
        ("lightgbm_regressor", {"n_estimators": 30}, y_reg, "regression"),
        ("logistic_regression", {}, y_multi, "classification"),
        ("logistic_regression", {}, y_bin, "classification"),
        ("lightgbm_classifier", {"n_estimators": 30}, y_bin, "classification"),
    ],
)
def test_the_portable_form_survives_npz_without_pickle(
    estimator: str, params: dict[str, Any], y: np.ndarray, task: str, tmp_path: Path
) -> None:
    model = build_estimator(estimator, params, seed=0).fit(X[:200], y[:200])
    bundle = to_bundle(model, task, X[:20])
    assert bundle is not None
    np.savez(tmp_path / "p.npz", **bundle)  # type: ignore[arg-type]
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        loaded = from_bundle({k: data[k] for k in data.files})
    assert loaded is not None
    predict, classes = loaded
    np.testing.assert_allclose(predict(X[200:]), estimator_predict(model, task)(X[200:]), rtol=1e-9)
    if task == "classification":
        assert classes == tuple(str(c) for c in model.classes_)
    else:
        assert classes is None


def test_a_bundle_that_does_not_reproduce_its_check_rows_is_refused() -> None:
    model = build_estimator("ridge", {}, seed=0).fit(X, y_reg)
    bundle = to_bundle(model, "regression", X[:20])
    assert bundle is not None
    assert from_bundle({**bundle, "coef": bundle["coef"] * 1.01}) is None
    # A model outside the catalog has no portable form: it is served as it is.
    from sklearn.ensemble import GradientBoostingRegressor

    other = GradientBoostingRegressor(n_estimators=3, random_state=0).fit(X, y_reg)
    assert to_bundle(other, "regression", X[:20]) is None


DERIVE = [[1.0, 0.5], [0.0, -1.0], [0.0, 0.0], [2.0, 0.0], [0.0, 0.0]]  # (features, derived)


@pytest.mark.parametrize(
    ("estimator", "params", "y", "task"),
    [
        ("lightgbm_regressor", {"n_estimators": 30}, y_reg, "regression"),
        ("ridge", {"alpha": 1.0}, y_reg, "regression"),
        ("lightgbm_classifier", {"n_estimators": 30}, y_multi, "classification"),
        ("logistic_regression", {}, y_bin, "classification"),
    ],
)
def test_derived_features_are_served_and_explained_from_the_portable_form(
    estimator: str, params: dict[str, Any], y: np.ndarray, task: str
) -> None:
    """A spec's derived features are the pipeline's first step; the portable predictor
    applies the same weights, and explanations name every column the model saw."""
    model = build_estimator(estimator, params, 0, DERIVE).fit(X[:200], y[:200])
    assert model.steps[0][0] == "derive" and model[:-1].transform(X[:1]).shape == (1, 7)
    bundle = to_bundle(model, task, X[:20])
    assert bundle is not None and bundle["derive_weights"].shape == (5, 2)
    loaded = from_bundle(bundle)
    assert loaded is not None
    want = estimator_predict(model, task)(X[200:])
    np.testing.assert_allclose(loaded[0](X[200:]), want, rtol=1e-9)
    explainer, why = explainers.from_bundle(bundle, task)
    assert explainer is not None, why
    assert explainer.explain(X[200:]).values.shape[2] == 7 + 1  # 5 features, 2 derived, base

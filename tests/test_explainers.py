"""Every model the catalog trains gets an explanation that adds up, by its best method.

The references are written out plainly here, independent of the code under test: TreeSHAP
against Shapley values enumerated over every coalition of a tree's cover-weighted
expectations (the quantity path-dependent TreeSHAP computes), model-agnostic values against
a direct enumeration, and the sampled estimate against the exact values within its own
standard errors.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prediction_service.predictors import explainers, shapley
from prediction_service.predictors.portable import estimator_predict, to_bundle
from prediction_service.training.build import build_estimator
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

IRIS = pd.read_csv(ROOT / "data" / "iris_raw.csv")
IRIS_X, IRIS_Y = IRIS.iloc[:, :4].to_numpy(float), IRIS.iloc[:, 4].to_numpy()


def _tree_expectation(tree: Any, x: np.ndarray, known: set[int], node: int = 0) -> np.ndarray:
    """E[tree(x) | the features in ``known``]: known splits follow x, unknown ones split the
    expectation by the training rows that went each way (scikit-learn's own tree_ arrays)."""
    left, right = tree.children_left[node], tree.children_right[node]
    if left < 0:
        value = tree.value[node, 0]
        return np.asarray(value / value.sum() if value.sum() and len(value) > 1 else value)
    f = tree.feature[node]
    if f in known:
        return _tree_expectation(tree, x, known, left if x[f] <= tree.threshold[node] else right)
    w = tree.weighted_n_node_samples
    return (
        w[left] * _tree_expectation(tree, x, known, left)
        + w[right] * _tree_expectation(tree, x, known, right)
    ) / w[node]


def _enumerated(value: Any, n_features: int) -> np.ndarray:
    """Shapley values of the set function ``value(coalition)`` by enumeration."""
    phi = np.zeros((n_features, len(np.atleast_1d(value(set())))))
    for i in range(n_features):
        others = [j for j in range(n_features) if j != i]
        for size in range(n_features):
            weight = math.factorial(size) * math.factorial(n_features - size - 1)
            weight /= math.factorial(n_features)
            for s in itertools.combinations(others, size):
                phi[i] += weight * (value(set(s) | {i}) - value(set(s)))
    return phi


def test_random_forest_treeshap_is_the_enumerated_path_dependent_value() -> None:
    model = build_estimator("random_forest_classifier", {"n_estimators": 3, "max_depth": 4}, 0)
    model.fit(IRIS_X, IRIS_Y)
    bundle = to_bundle(model, "classification", IRIS_X[:20])
    assert bundle is not None
    explainer, why = explainers.from_bundle(bundle, "classification")
    assert explainer is not None, why
    assert (explainer.method, explainer.output) == ("tree_shap", "probability")
    rows = IRIS_X[::30].astype(np.float32).astype(np.float64)
    got = explainer.explain(rows)
    trees = [e.tree_ for e in model.estimators_]
    for r, x in enumerate(rows):

        def value(known: set[int], x: np.ndarray = x) -> np.ndarray:
            return np.mean([_tree_expectation(t, x, known) for t in trees], axis=0)

        want = _enumerated(value, 4)  # (features, classes)
        np.testing.assert_allclose(got.values[r, :, :-1], want.T, atol=1e-12)
        np.testing.assert_allclose(got.values[r, :, -1], value(set()), atol=1e-12)
    np.testing.assert_allclose(got.output, model.predict_proba(rows), atol=1e-12)
    assert (explainers.additivity_error(got) <= explainers.tolerance(got.output)).all()


@pytest.mark.parametrize(
    ("estimator", "y", "task", "outputs", "output"),
    [
        ("hist_gradient_boosting_classifier", IRIS_Y, "classification", 3, "log-odds"),
        ("hist_gradient_boosting_classifier", IRIS_Y == IRIS_Y[0], "classification", 1,
         "log-odds"),
        ("hist_gradient_boosting_regressor", IRIS_X[:, 3], "regression", 1, "value"),
        ("random_forest_regressor", IRIS_X[:, 3], "regression", 1, "value"),
    ],
)  # fmt: skip
def test_every_tree_ensemble_is_explained_by_treeshap(
    estimator: str, y: np.ndarray, task: str, outputs: int, output: str
) -> None:
    X = IRIS_X[:, :3] if task == "regression" else IRIS_X
    model = build_estimator(estimator, {}, 0).fit(X, y)
    bundle = to_bundle(model, task, X[:20])
    assert bundle is not None
    explainer, why = explainers.from_bundle(bundle, task)
    assert explainer is not None, why
    assert (explainer.method, explainer.output) == ("tree_shap", output)
    got = explainer.explain(X)
    assert got.values.shape == (len(X), outputs, X.shape[1] + 1)
    if task == "regression":
        np.testing.assert_allclose(got.output[:, 0], model.predict(X), rtol=1e-9)
    else:
        raw = model.decision_function(X).reshape(len(X), -1)  # its own log-odds
        np.testing.assert_allclose(got.output, raw, rtol=1e-9, atol=1e-9)
    print(f"{estimator}: worst additivity error {explainers.additivity_error(got).max():.1e}")
    assert (explainers.additivity_error(got) <= explainers.tolerance(got.output)).all()


def test_knn_gets_exact_interventional_shapley_values() -> None:
    """The iris spec's knn: four features, so every coalition is enumerated over the
    background; checked against a direct enumeration of E[f(x_S, background)]."""
    model = build_estimator("k_neighbors_classifier", {"n_neighbors": 7}, 0).fit(IRIS_X, IRIS_Y)
    predict = estimator_predict(model, "classification")
    background = explainers.background_rows(IRIS_X)
    explainer = explainers.model_agnostic(predict, "classification", background[:20])
    assert (explainer.method, explainer.output) == ("exact_shapley", "probability")
    rows = IRIS_X[[0, 60, 120]]
    got = explainer.explain(rows)
    for r, x in enumerate(rows):

        def value(known: set[int], x: np.ndarray = x) -> np.ndarray:
            mixed = background[:20].copy()
            mixed[:, sorted(known)] = x[sorted(known)]
            return np.asarray(predict(mixed).mean(axis=0))

        np.testing.assert_allclose(got.values[r, :, :-1], _enumerated(value, 4).T, atol=1e-12)
    np.testing.assert_allclose(got.output, predict(rows), atol=1e-12)
    assert (explainers.additivity_error(got) <= explainers.tolerance(got.output)).all()
    assert got.errors is None and got.samples is None


def test_beyond_ten_features_the_estimate_reports_its_standard_errors() -> None:
    """Twelve features: the sampled estimate adds up exactly, and lies within a few of its
    own standard errors of the exact values (computed here by brute force over 4,096
    coalitions, which the explainer refuses to do per request)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 12))
    y = X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + X[:, 3:].sum(axis=1)
    model = build_estimator("random_forest_regressor", {"n_estimators": 20}, 0).fit(X, y)
    predict = estimator_predict(model, "regression")
    background = explainers.background_rows(X)
    explainer = explainers.model_agnostic(predict, "regression", background)
    assert (explainer.method, explainer.exact) == ("sampled_shapley", False)
    got = explainer.explain(X[:2])
    assert got.errors is not None and got.samples == shapley.PERMUTATIONS * 16 * 13
    assert (explainers.additivity_error(got) <= explainers.tolerance(got.output)).all()
    used = background[
        np.random.default_rng(0).choice(len(background), shapley.SAMPLED_BACKGROUND, replace=False)
    ]
    for r, x in enumerate(X[:2]):
        coalitions = [set(s) for k in range(13) for s in itertools.combinations(range(12), k)]
        mixed = np.repeat(used[None], len(coalitions), axis=0)
        for c, known in enumerate(coalitions):
            mixed[c][:, sorted(known)] = x[sorted(known)]
        means = predict(mixed.reshape(-1, 12)).reshape(len(coalitions), -1).mean(axis=1)
        table = {frozenset(k): np.atleast_1d(m) for k, m in zip(coalitions, means)}
        want = _enumerated(lambda known: table[frozenset(known)], 12)[:, 0]
        z = np.abs(got.values[r, 0, :-1] - want) / np.maximum(got.errors[r, 0], 1e-12)
        print(f"row {r}: worst |estimate - exact| / standard error = {z.max():.2f}")
        assert np.median(z) < 2 and z.max() < 5

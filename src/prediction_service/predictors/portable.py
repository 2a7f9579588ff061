"""Fast predictors under the scikit-learn wrappers, and their portable form.

Per call, scikit-learn's input validation and LightGBM's sklearn wrapper cost far more than the
arithmetic for one row (measured: 0.83 ms vs 22 us for the iris pipeline, 1.4 ms vs 0.23 ms for
the LightGBM regressor). A direct predictor computes the same numbers from plain arrays:
standard scalers, then a linear model or a LightGBM forest (``forest.py``).

Those arrays are also the model's *portable form*: training stores them beside the model
(``to_bundle``), and the service builds the predictor from them (``from_bundle``) without
unpickling scikit-learn or LightGBM objects, which is most of its start-up time and memory.
Either way the predictor is checked against the estimator's own outputs on sample rows, and
anything it cannot reproduce falls back to the estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from prediction_service.predictors.forest import Forest

log = logging.getLogger(__name__)

# rows (n, features) float64 -> values (n,) for regressors, probabilities (n, classes) otherwise
PredictFn = Callable[[np.ndarray], np.ndarray]
# rows (n, features) -> (n, outputs, features + 1): each feature's contribution to each raw
# output (the value for regressors, log-odds for classifiers), then the output's base value
ExplainFn = Callable[[np.ndarray], np.ndarray]
Arrays = Mapping[str, np.ndarray]

_LINEAR_REGRESSORS = {"Ridge", "LinearRegression", "Lasso", "ElasticNet"}
# Check rows an explainer must reproduce at load. TreeSHAP over the 600-tree housing forest
# costs ~3.2 ms a row: all 128 check rows added 411 ms to every load, 16 add ~50 ms.
EXPLAIN_CHECK_ROWS = 16


def _softmax(z: np.ndarray) -> np.ndarray:
    # The ufuncs' own reductions, the same arithmetic as z.max() and e.sum() without their
    # Python wrappers: 3.8 us a row where the methods took 4.7.
    e = np.exp(z - np.maximum.reduce(z, axis=1, keepdims=True))
    return e / np.add.reduce(e, axis=1, keepdims=True)


def _both_classes(positive: PredictFn) -> PredictFn:
    """Binary classifiers: the positive class's probability -> both classes' columns."""

    def both(X: np.ndarray) -> np.ndarray:
        p = positive(X)
        return np.column_stack([1.0 - p, p])

    return both


def split_pipeline(model: Any) -> tuple[list[Any], Any]:
    """A pipeline's transforming steps and final estimator; ``([], model)`` for a bare one."""
    steps = getattr(model, "steps", None)
    return ([s for _, s in steps[:-1]], steps[-1][1]) if steps else ([], model)


def to_arrays(model: Any, task: str) -> dict[str, np.ndarray] | None:
    """The direct predictor's arrays for ``model``, or None when it has none."""
    transforms, final = split_pipeline(model)
    arrays: dict[str, np.ndarray] = {}
    if transforms and type(transforms[0]).__name__ == "LinearFeatures":  # training/derive.py
        arrays["derive_weights"] = np.asarray(transforms[0].weights_, dtype=np.float64)
        transforms = transforms[1:]
    for i, step in enumerate(transforms):
        if type(step).__name__ != "StandardScaler":
            return None
        n = step.n_features_in_
        arrays[f"scaler{i}_mean"] = np.asarray(step.mean_ if step.with_mean else np.zeros(n))
        arrays[f"scaler{i}_scale"] = np.asarray(step.scale_ if step.with_std else np.ones(n))
    kind = type(final).__name__
    if hasattr(final, "booster_"):
        forest = Forest.from_lightgbm(final.booster_)
        if forest is None:
            return None
        arrays.update({f"forest_{k}": v for k, v in forest.to_arrays().items()})
        link = "forest"
    elif task == "regression" and kind in _LINEAR_REGRESSORS and np.ndim(final.coef_) == 1:
        link = "identity"
    elif task == "classification" and kind == "LogisticRegression":
        link = "logistic" if len(final.classes_) == 2 else "softmax"
    else:
        return None
    if link != "forest":
        arrays["coef"] = np.asarray(final.coef_, dtype=np.float64)
        arrays["intercept"] = np.asarray(final.intercept_, dtype=np.float64)
    arrays["link"] = np.array(link)
    return arrays


def from_arrays(arrays: Arrays) -> PredictFn | None:
    """The predictor ``to_arrays`` describes (None if this build cannot run it)."""
    scalers = _scalers(arrays)
    link = str(arrays["link"])
    core: PredictFn
    if link == "forest":
        forest = Forest.from_arrays({k[7:]: v for k, v in arrays.items() if k[:7] == "forest_"})
        if forest is None:
            return None
        binary = forest.n_outputs == 1 and forest.objective.startswith("binary")
        core = _both_classes(forest.predict) if binary else forest.predict
    else:
        coef, intercept = arrays["coef"], arrays["intercept"]
        if link == "identity":
            core = lambda X: np.asarray(X @ coef + intercept)  # noqa: E731
        elif link == "logistic":
            core = _both_classes(lambda X: 1.0 / (1.0 + np.exp(-(X @ coef[0] + intercept[0]))))
        else:
            core = lambda X: _softmax(X @ coef.T + intercept)  # noqa: E731
    if not scalers and "derive_weights" not in arrays:
        return core
    return lambda X: core(_prepared(arrays, scalers, X))


def estimator_predict(model: Any, task: str) -> PredictFn:
    if task == "regression":
        return lambda X: np.asarray(model.predict(X), dtype=float)
    return lambda X: np.asarray(model.predict_proba(X), dtype=float)


def _agrees(predict: PredictFn, X: np.ndarray, expected: np.ndarray) -> bool:
    try:
        return bool(np.allclose(predict(X), expected, rtol=1e-9, atol=1e-9))
    except Exception:  # noqa: BLE001 - any failure of the fast path means: do not use it
        log.exception("fast predictor failed on the check rows")
        return False


def _portable(model: Any, task: str, sample: np.ndarray) -> tuple[dict[str, Any], PredictFn] | None:
    """The portable form of ``model`` (arrays, classes, and the estimator's outputs on
    ``sample`` as check rows) and the predictor built from it, if it reproduces them."""
    arrays = to_arrays(model, task)
    if arrays is None:
        return None
    bundle: dict[str, Any] = {
        **arrays, "check_rows": sample, "check_outputs": estimator_predict(model, task)(sample)
    }  # fmt: skip
    transforms, final = split_pipeline(model)
    if hasattr(final, "booster_"):  # LightGBM's own TreeSHAP: what ours must reproduce at load
        inputs = sample
        for step in transforms:
            inputs = step.transform(inputs)
        contrib = final.booster_.predict(inputs, pred_contrib=True)
        bundle["check_contributions"] = np.asarray(contrib).reshape(
            len(sample), -1, inputs.shape[1] + 1
        )
    if task == "classification":
        bundle["classes"] = np.array([str(c) for c in model.classes_])
    loaded = from_bundle(bundle)
    if loaded is None:
        log.warning("no exact fast predictor for %s; using the estimator", type(model).__name__)
        return None
    return bundle, loaded[0]


def make_predictor(model: Any, task: str, sample: np.ndarray) -> tuple[PredictFn, str]:
    """The fastest exact predictor for ``model`` and its kind ("direct" or "estimator")."""
    portable = _portable(model, task, sample)
    if portable is not None:
        return portable[1], "direct"
    return estimator_predict(model, task), "estimator"


def to_bundle(model: Any, task: str, sample: np.ndarray) -> dict[str, np.ndarray] | None:
    """What training stores for the service: the portable form, or None without one."""
    portable = _portable(model, task, sample)
    return portable[0] if portable is not None else None


def from_bundle(bundle: Arrays) -> tuple[PredictFn, tuple[str, ...] | None] | None:
    """The predictor and classes of a bundle, if it reproduces the bundle's check rows."""
    predict = from_arrays(bundle)
    if predict is None or not _agrees(predict, bundle["check_rows"], bundle["check_outputs"]):
        return None
    classes = tuple(str(c) for c in bundle["classes"]) if "classes" in bundle else None
    return predict, classes


def _scalers(arrays: Arrays) -> list[tuple[np.ndarray, np.ndarray]]:
    out: list[tuple[np.ndarray, np.ndarray]] = []
    while f"scaler{len(out)}_mean" in arrays:
        out.append((arrays[f"scaler{len(out)}_mean"], arrays[f"scaler{len(out)}_scale"]))
    return out


def _prepared(
    arrays: Arrays, scalers: list[tuple[np.ndarray, np.ndarray]], X: np.ndarray
) -> np.ndarray:
    """The rows as the final estimator sees them: derived features appended, then scaled."""
    weights = arrays.get("derive_weights")
    if weights is not None:
        X = np.hstack([X, X @ weights])
    for mean, scale in scalers:
        X = (X - mean) / scale
    return X


def explainer_from_bundle(bundle: Arrays) -> tuple[ExplainFn | None, str]:
    """The exact explainer of a bundle's model, or None and the reason there is none.

    A LightGBM forest: TreeSHAP over its node counts, which must equal LightGBM's own
    ``pred_contrib`` on the check rows. A linear model behind a standard scaler: each
    coefficient times the feature's scaled value, which is its distance from the training
    mean in the model's scaled space (the scaler's mean is the training mean), with the
    intercept as the base. Either way a row's contributions and base add up to its raw score.
    """
    link = str(bundle["link"])
    scalers = _scalers(bundle)
    explain: ExplainFn
    raw: PredictFn  # scaled rows -> raw outputs, what the contributions must add up to
    if link == "forest":
        forest = Forest.from_arrays({k[7:]: v for k, v in bundle.items() if k[:7] == "forest_"})
        if forest is None or forest.count is None or "check_contributions" not in bundle:
            return None, "this version was trained before explanations: retrain it to explain"
        raw = forest.raw
        explain = lambda X: forest.contributions(_prepared(bundle, scalers, X))  # noqa: E731
    else:
        if not scalers:
            return (
                None,
                "a linear model without a standard scaler has no training mean to explain from",
            )
        coef = np.atleast_2d(bundle["coef"])
        intercept = np.atleast_1d(bundle["intercept"])

        raw = lambda Z: np.asarray(Z @ coef.T + intercept)  # noqa: E731

        def explain(X: np.ndarray) -> np.ndarray:
            Z = _prepared(bundle, scalers, X)
            out = np.empty((len(Z), len(coef), Z.shape[1] + 1))
            out[:, :, :-1] = Z[:, None, :] * coef[None, :, :]
            out[:, :, -1] = intercept
            return out

    rows = bundle["check_rows"][:EXPLAIN_CHECK_ROWS]
    try:
        got = explain(rows)
        adds_up = np.allclose(
            got.sum(axis=2), raw(_prepared(bundle, scalers, rows)), rtol=1e-9, atol=1e-9
        )
        if "check_contributions" in bundle:
            adds_up = adds_up and np.allclose(
                got, bundle["check_contributions"][: len(rows)], rtol=1e-9, atol=1e-9
            )
    except Exception:  # noqa: BLE001 - an explainer that fails its check is not offered
        log.exception("explainer failed on the check rows")
        adds_up = False
    if not adds_up:
        return None, "the explainer did not reproduce this version's check rows"
    return explain, ""

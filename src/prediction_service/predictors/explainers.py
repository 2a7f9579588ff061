"""An explainer for every model the service can serve.

Exact where an exact method exists:

- ``tree_shap``: path-dependent TreeSHAP over the node counts of a tree ensemble (LightGBM,
  scikit-learn's random forests and histogram gradient boosting; ``forest.py``), in the
  model's raw space (log-odds for boosted classifiers, class probability for random forests).
- ``linear``: a linear model behind a standard scaler, each coefficient times the feature's
  scaled value (its distance from the training mean in the model's space).
- ``exact_shapley``: any other model with at most ``shapley.EXACT_FEATURES`` request
  features: interventional Shapley values over every coalition and a background sample.

Beyond that, ``sampled_shapley`` estimates them and reports each value's standard error.
Every explanation keeps the additivity check: a row's contributions plus the base value equal
the output the model computed, within ``tolerance``; each explainer is checked on its
version's check rows at load, and each answer reports its own error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prediction_service.predictors import shapley
from prediction_service.predictors.forest import Forest
from prediction_service.predictors.portable import Arrays, PredictFn, prepare_rows
from prediction_service.predictors.shapley import Explanation

log = logging.getLogger(__name__)

Method = Literal["tree_shap", "linear", "exact_shapley", "sampled_shapley"]
Output = Literal["value", "log-odds", "probability"]

# Check rows an explainer must reproduce at load. TreeSHAP over the 600-tree housing forest
# costs ~3.2 ms a row: all 128 check rows added 411 ms to every load, 16 add ~50 ms.
CHECK_ROWS = 16
# Rows of training data stored with a version for model-agnostic explanations.
BACKGROUND_ROWS = 100
# |contributions + base - output| allowed, relative to the output's size (at least 1).
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Explainer:
    method: Method
    output: Output  # what the contributions add up to
    explain: Callable[[np.ndarray], Explanation]  # request rows -> their explanation
    n_features: int  # columns explained: the request's features, then any derived ones

    @property
    def exact(self) -> bool:
        return self.method != "sampled_shapley"


def tolerance(output: np.ndarray) -> np.ndarray:
    """The additivity bound of each row: TOLERANCE times its largest output, at least 1."""
    return TOLERANCE * np.maximum(1.0, np.abs(output).reshape(len(output), -1).max(axis=1))


def additivity_error(e: Explanation) -> np.ndarray:
    """Per row, the largest |contributions + base - output| over its outputs."""
    return np.abs(e.values.sum(axis=2) - e.output).max(axis=1)


def from_bundle(bundle: Arrays, task: str) -> tuple[Explainer | None, str]:
    """The exact explainer a version's portable form describes (a tree ensemble or a scaled
    linear model), or None and the reason there is none."""
    link = str(bundle["link"])
    if link == "forest":
        forest = Forest.from_arrays({k[7:]: v for k, v in bundle.items() if k[:7] == "forest_"})
        if forest is None or forest.count is None:
            return None, "a forest stored without node counts (trained before explanations)"
        average = forest.objective == "average"
        output: Output = (
            "value" if task == "regression" else "probability" if average else "log-odds"
        )

        def trees(X: np.ndarray) -> Explanation:
            Z = prepare_rows(bundle, X)
            return Explanation(forest.contributions(Z), forest.raw(Z))

        explainer = Explainer("tree_shap", output, trees, forest.n_features)
    elif link in ("identity", "logistic", "softmax"):
        if "scaler0_mean" not in bundle:
            return None, "a linear model without a standard scaler has no training mean"
        coef = np.atleast_2d(bundle["coef"])
        intercept = np.atleast_1d(bundle["intercept"])

        def linear(X: np.ndarray) -> Explanation:
            Z = prepare_rows(bundle, X)
            values = np.empty((len(Z), len(coef), Z.shape[1] + 1))
            values[:, :, :-1] = Z[:, None, :] * coef[None, :, :]
            values[:, :, -1] = intercept
            return Explanation(values, np.asarray(Z @ coef.T + intercept))

        output = "value" if task == "regression" else "log-odds"
        explainer = Explainer("linear", output, linear, coef.shape[1])
    else:
        return None, f"no closed form for a {link} model"
    rows = bundle["check_rows"][:CHECK_ROWS]
    if not _holds(explainer, rows, bundle.get("check_contributions")):
        return None, "the explainer did not reproduce this version's check rows"
    return explainer, ""


def model_agnostic(predict: PredictFn, task: str, background: np.ndarray) -> Explainer:
    """Shapley values of ``predict``'s own output (the value, or each class's probability)
    over ``background``: exact up to shapley.EXACT_FEATURES features, sampled beyond."""
    n_features = background.shape[1]
    method: Method = "exact_shapley" if n_features <= shapley.EXACT_FEATURES else "sampled_shapley"
    output: Output = "value" if task == "regression" else "probability"
    return Explainer(method, output, lambda X: shapley.shapley(predict, X, background), n_features)


def background_rows(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """Up to BACKGROUND_ROWS rows of ``X`` drawn without replacement: what a version stores."""
    rng = np.random.default_rng(seed)
    return np.asarray(X[rng.choice(len(X), min(BACKGROUND_ROWS, len(X)), replace=False)])


def _holds(explainer: Explainer, rows: np.ndarray, expected: np.ndarray | None) -> bool:
    """Whether ``explainer`` adds up on ``rows`` (and equals ``expected`` where given)."""
    try:
        got = explainer.explain(rows)
        holds = bool((additivity_error(got) <= tolerance(got.output)).all())
        if expected is not None:  # LightGBM's own TreeSHAP, stored at training
            holds = holds and np.allclose(got.values, expected[: len(rows)], rtol=1e-9, atol=1e-9)
        return holds
    except Exception:  # noqa: BLE001 - an explainer that fails its check is not offered
        log.exception("explainer failed on the check rows")
        return False


def checked(explainer: Explainer, rows: np.ndarray) -> tuple[Explainer | None, str]:
    """``explainer`` if it adds up on ``rows``, else None and why."""
    if _holds(explainer, rows, None):
        return explainer, ""
    return None, f"the {explainer.method} explainer did not add up on the check rows"

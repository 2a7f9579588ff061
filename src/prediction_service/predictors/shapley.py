"""Shapley values for any model, from its predict function and a background sample.

Interventional Shapley values: a feature's contribution is its average marginal effect on
the model's output when the features outside a coalition take the background rows' values.
With ``F`` features there are ``2**F`` coalitions: up to ``EXACT_FEATURES`` (10) every one
is evaluated, over every background row, and the values are exact for that background.
Beyond, permutation sampling estimates them (Štrumbelj and Kononenko's estimator, antithetic
pairs of permutations), with each value's standard error. Either way a row's values plus the
base value (the mean output over the background) add up to the model's output for it: each
sampled permutation's marginal contributions telescope to exactly that difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

EXACT_FEATURES = 10
# Rows given to the model at once (the coalitions of a row times the background).
CHUNK_ROWS = 8192
# Permutations a sampled estimate takes (in antithetic pairs), and background rows each uses.
PERMUTATIONS = 64
SAMPLED_BACKGROUND = 16

Predict = Callable[[np.ndarray], np.ndarray]


class Explanation(NamedTuple):
    """What an explainer answers for some rows."""

    values: np.ndarray  # (rows, outputs, features + 1): contributions, then the base value
    output: np.ndarray  # (rows, outputs): the output they add up to, computed by the model
    errors: np.ndarray | None = None  # (rows, outputs, features): standard errors, if sampled
    samples: int | None = None  # evaluations of the model a row took, if sampled


def _outputs(predict: Predict, X: np.ndarray) -> np.ndarray:
    """``predict`` in chunks, as (rows, outputs)."""
    parts = [predict(X[i : i + CHUNK_ROWS]) for i in range(0, len(X), CHUNK_ROWS)]
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return out.reshape(len(X), -1)


def exact(predict: Predict, X: np.ndarray, background: np.ndarray) -> Explanation:
    """Exact interventional Shapley values over ``background``, for up to EXACT_FEATURES
    features: every coalition's mean output, then each feature's weighted marginals."""
    n_features = X.shape[1]
    if n_features > EXACT_FEATURES:
        raise ValueError(f"{n_features} features: exact Shapley values take at most 10")
    masks = ((np.arange(2**n_features)[:, None] >> np.arange(n_features)) & 1).astype(bool)
    size = masks.sum(axis=1)
    # Shapley weights |S|! (F - |S| - 1)! / F! by coalition size.
    weight = np.array(
        [math.factorial(s) * math.factorial(n_features - s - 1) / math.factorial(n_features)
         for s in range(n_features)]
    )  # fmt: skip
    m = len(background)
    values, outputs = [], []
    for x in X:
        rows = np.where(masks[:, None, :], x[None, None, :], background[None, :, :])
        v = _outputs(predict, rows.reshape(-1, n_features)).reshape(len(masks), m, -1).mean(axis=1)
        phi = np.empty((v.shape[1], n_features + 1))
        for i in range(n_features):
            without = np.flatnonzero(~masks[:, i])
            gain = v[without + (1 << i)] - v[without]  # (coalitions without i, outputs)
            phi[:, i] = (weight[size[without]][:, None] * gain).sum(axis=0)
        phi[:, -1] = v[0]  # no feature of the row: the background's mean output
        values.append(phi)
        outputs.append(v[-1])  # every feature of the row: the row's own output
    return Explanation(np.array(values), np.array(outputs))


def sampled(predict: Predict, X: np.ndarray, background: np.ndarray, seed: int = 0) -> Explanation:
    """Permutation sampling: for each of PERMUTATIONS orders (in antithetic pairs) and each of
    SAMPLED_BACKGROUND background rows, the features join one at a time in that order and
    each is credited with the change it makes. The mean is the estimate, the spread over
    permutations its standard error."""
    rng = np.random.default_rng(seed)
    n_features = X.shape[1]
    base_rows = background[rng.choice(len(background), min(SAMPLED_BACKGROUND, len(background)),
                                      replace=False)]  # fmt: skip
    half = [rng.permutation(n_features) for _ in range(PERMUTATIONS // 2)]
    orders = half + [order[::-1] for order in half]
    m, steps = len(base_rows), n_features + 1
    values, outputs, errors = [], [], []
    for x in X:
        chains = np.empty((len(orders), m, steps, n_features))
        for p, order in enumerate(orders):
            current = base_rows.copy()
            chains[p, :, 0] = current
            for step, feature in enumerate(order, 1):
                current[:, feature] = x[feature]
                chains[p, :, step] = current
        out = _outputs(predict, chains.reshape(-1, n_features))
        out = out.reshape(len(orders), m, steps, -1).mean(axis=1)  # (orders, steps, outputs)
        marginal = np.empty((len(orders), out.shape[2], n_features))
        for p, order in enumerate(orders):
            marginal[p][:, order] = (out[p, 1:] - out[p, :-1]).T
        phi = np.empty((out.shape[2], n_features + 1))
        phi[:, :-1] = marginal.mean(axis=0)
        phi[:, -1] = out[0, 0]  # the sampled background's mean output
        values.append(phi)
        outputs.append(out[0, -1])
        # Antithetic pairs are averaged first: the pairs are the independent draws.
        pairs = (marginal[: len(half)] + marginal[len(half) :]) / 2
        errors.append(pairs.std(axis=0, ddof=1) / math.sqrt(len(half)))
    return Explanation(
        np.array(values), np.array(outputs), np.array(errors), len(orders) * m * steps
    )


def shapley(predict: Predict, X: np.ndarray, background: np.ndarray) -> Explanation:
    """Exact values where the coalitions can be counted, sampled beyond."""
    if X.shape[1] <= EXACT_FEATURES:
        return exact(predict, X, background)
    return sampled(predict, X, background)

"""Derived features (spec ``derived_features``) as the first step of a model's pipeline: the
request's features, then weighted sums of them.

A scikit-learn transformer, so the logged model (and ``mlflow models serve``) takes the
request's features as before; the portable predictor applies the same weights itself
(``derive_weights`` in its arrays) without importing this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class LinearFeatures(TransformerMixin, BaseEstimator):
    """``X -> [X, X @ weights]``; ``weights`` is (features, derived)."""

    def __init__(self, weights: Any = None) -> None:
        self.weights = weights

    def fit(self, X: Any, y: Any = None) -> LinearFeatures:
        self.weights_ = np.asarray(self.weights, dtype=np.float64)
        self.n_features_in_ = self.weights_.shape[0]
        return self

    def transform(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.hstack([X, X @ self.weights_])

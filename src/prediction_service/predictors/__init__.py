"""Exact, fast predictors and their portable form, below both training and serving.

Training stores a model's portable form (``to_bundle``); serving rebuilds the predictor from it
(``from_bundle``) without unpickling scikit-learn or LightGBM objects.
"""

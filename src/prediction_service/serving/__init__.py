"""Serving: fast predictors over native models and the store that holds each champion."""

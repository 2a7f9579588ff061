"""Training: data validation, candidate estimators, cross-validation and the gate."""

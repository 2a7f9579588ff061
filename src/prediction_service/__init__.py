"""A multi-model prediction service with its own MLOps loop."""

__version__ = "0.1.0"

"""The MLflow registry and tracking store. The only package that imports ``mlflow``."""

from prediction_service.registry.store import ModelVersionInfo, Registry
from prediction_service.registry.tracking import RunRecorder

__all__ = ["ModelVersionInfo", "Registry", "RunRecorder"]

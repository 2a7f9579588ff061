"""The MLflow registry and tracking store. The only package that imports ``mlflow``."""

from prediction_service.registry.store import PREDICTOR_FILE, ModelVersionInfo, Registry
from prediction_service.registry.tracking import TrainingRecorder

__all__ = ["PREDICTOR_FILE", "ModelVersionInfo", "Registry", "TrainingRecorder"]

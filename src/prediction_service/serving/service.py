"""Predictions as plain values: testable without HTTP, called by thin routes."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np

from prediction_service.errors import BatchTooLargeError
from prediction_service.metrics import Metrics
from prediction_service.serving.model_store import ModelStore, ServedModel
from prediction_service.storage.prediction_log import PredictionLog


class PredictionService:
    def __init__(
        self, store: ModelStore, log: PredictionLog, metrics: Metrics, max_batch: int
    ) -> None:
        self.store = store
        self.log = log
        self.metrics = metrics
        self.max_batch = max_batch

    def check_batch_size(self, n: int) -> None:
        if n > self.max_batch:
            raise BatchTooLargeError(
                f"batch of {n} records exceeds the limit of {self.max_batch}; split it up"
            )

    def predict(
        self, name: str, records: list[dict[str, float]], request_id: str | None, kind: str
    ) -> dict[str, Any]:
        """Predict ``records`` (already validated) with the served version of ``name``."""
        model = self.store.choose(name, request_id)
        features = model.spec.feature_names
        started = time.perf_counter()
        X = np.array([[rec[f] for f in features] for rec in records], dtype=float)
        try:
            out = model.predict(X)
        except Exception:
            self.metrics.prediction_errors.labels(name, "model_error").inc()
            raise
        elapsed = time.perf_counter() - started
        self.metrics.predictions.labels(name, model.version).inc(len(records))
        self.metrics.prediction_latency.labels(name, model.version, kind).observe(elapsed)
        items = _shape(model, out)
        self._observe_outputs(name, model, out, items)
        now = datetime.now(UTC)
        latency_ms = elapsed * 1000.0
        per_row_ms = latency_ms / len(records)
        rows = []
        for rec, item in zip(records, items):
            item["prediction_id"] = pid = uuid.uuid4().hex
            rows.append(
                {
                    "id": pid,
                    "created_at": now,
                    "model": name,
                    "version": model.version,
                    "features": rec,
                    "prediction": item["prediction"],
                    "probabilities": item.get("probabilities"),
                    "latency_ms": per_row_ms,
                    "request_id": request_id,
                    "status": "ok",
                }
            )
        self.log.record_many(rows)
        return {
            "model": name,
            "registered_name": model.spec.registered_name,
            "version": model.version,
            "items": items,
            "latency_ms": latency_ms,
        }

    def _observe_outputs(
        self, name: str, model: ServedModel, out: np.ndarray, items: list[dict[str, Any]]
    ) -> None:
        version = model.version
        if model.classes is None:
            values = self.metrics.prediction_value.labels(name, version)
            for v in out:
                values.observe(float(v))
            return
        confidence = self.metrics.prediction_confidence.labels(name, version)
        for row in out.max(axis=1):
            confidence.observe(float(row))
        counts: dict[str, int] = {}
        for item in items:
            counts[item["prediction"]] = counts.get(item["prediction"], 0) + 1
        for cls, n in counts.items():
            self.metrics.predicted_class.labels(name, version, cls).inc(n)


def _shape(model: ServedModel, out: np.ndarray) -> list[dict[str, Any]]:
    if model.classes is None:
        return [{"prediction": float(v)} for v in out]
    classes = model.classes
    best = out.argmax(axis=1)
    return [
        {
            "prediction": classes[int(b)],
            "probabilities": dict(zip(classes, map(float, row))),
        }
        for b, row in zip(best, out)
    ]

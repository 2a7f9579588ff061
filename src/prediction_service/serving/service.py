"""Predictions as plain values: testable without HTTP, called by thin routes."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from prediction_service.errors import BatchTooLargeError
from prediction_service.metrics import Metrics
from prediction_service.serving.model_store import ModelStore, ServedModel
from prediction_service.storage.prediction_log import PredictionLog


@dataclass(frozen=True)
class _Instruments:
    """One model version's metric children, looked up once (labels() costs microseconds)."""

    predictions: Any
    latency: dict[str, Any]
    values: Any  # regression: predicted values; classification: confidence
    classes: dict[str, Any]


class PredictionService:
    def __init__(
        self, store: ModelStore, log: PredictionLog, metrics: Metrics, max_batch: int
    ) -> None:
        self.store = store
        self.log = log
        self.metrics = metrics
        self.max_batch = max_batch
        self._instruments: dict[tuple[str, str], _Instruments] = {}
        # Prediction ids: a random per-process prefix and a counter; unique without a
        # system call per id.
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count()

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
        inst = self._instruments_for(model)
        inst.predictions.inc(len(records))
        inst.latency[kind].observe(elapsed)
        items = self._shape(model, out.tolist(), inst)
        now = datetime.now(UTC)
        latency_ms = elapsed * 1000.0
        per_row_ms = latency_ms / len(records)
        prefix, ids = self._id_prefix, self._ids
        rows = []
        for rec, item in zip(records, items):
            item["prediction_id"] = pid = f"{prefix}{next(ids):016x}"
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

    def predict_one(
        self, name: str, record: dict[str, float], request_id: str | None
    ) -> dict[str, Any]:
        """One record, shaped as the single-prediction response."""
        result = self.predict(name, [record], request_id, "single")
        return {
            "model": result["model"],
            "registered_name": result["registered_name"],
            "version": result["version"],
            **result["items"][0],
            "latency_ms": result["latency_ms"],
        }

    def _instruments_for(self, model: ServedModel) -> _Instruments:
        key = (model.name, model.version)
        inst = self._instruments.get(key)
        if inst is None:
            m, name, version = self.metrics, model.name, model.version
            values = m.prediction_value if model.classes is None else m.prediction_confidence
            inst = _Instruments(
                predictions=m.predictions.labels(name, version),
                latency={
                    k: m.prediction_latency.labels(name, version, k) for k in ("single", "batch")
                },
                values=values.labels(name, version),
                classes={
                    c: m.predicted_class.labels(name, version, c) for c in model.classes or ()
                },
            )
            self._instruments[key] = inst
        return inst

    @staticmethod
    def _shape(model: ServedModel, out: list[Any], inst: _Instruments) -> list[dict[str, Any]]:
        """Plain-Python shaping: for a handful of numbers it beats numpy's per-call overhead."""
        observe = inst.values.observe
        if model.classes is None:
            for v in out:
                observe(v)
            return [{"prediction": v} for v in out]
        classes = model.classes
        items = []
        for row in out:
            best = max(range(len(row)), key=row.__getitem__)
            observe(row[best])
            inst.classes[classes[best]].inc()
            items.append({"prediction": classes[best], "probabilities": dict(zip(classes, row))})
        return items

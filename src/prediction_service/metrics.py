"""Prometheus metrics, held in an object with its own registry so tests stay independent."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# Sub-millisecond to multi-second: single-row predictions take ~0.1 ms, batches seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series double the exposition and no dashboard reads them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests served, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to response end, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "http_requests_in_flight", "Requests being handled right now.", registry=r
        )
        self.predictions = Counter(
            "predictions_total",
            "Predicted rows, by model and the version that answered.",
            ["model", "version"],
            registry=r,
        )
        self.prediction_latency = Histogram(
            "prediction_duration_seconds",
            "Time spent in the model per request (one row or one batch).",
            ["model", "version", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction_errors = Counter(
            "prediction_errors_total",
            "Prediction requests that failed, by model and reason.",
            ["model", "reason"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "model_loaded", "1 when the model is loaded and serving, else 0.", ["model"], registry=r
        )
        self.model_version_info = Gauge(
            "model_version_info",
            "1 for the version each model is serving.",
            ["model", "version"],
            registry=r,
        )
        self.model_load_failures = Counter(
            "model_load_failures_total",
            "Attempts to load a model version that failed.",
            ["model"],
            registry=r,
        )
        self.model_swaps = Counter(
            "model_swaps_total",
            "Times the served version of a model changed without a restart.",
            ["model"],
            registry=r,
        )
        self.challenger_percent = Gauge(
            "model_challenger_traffic_percent",
            "Share of a model's requests routed to its challenger version.",
            ["model"],
            registry=r,
        )
        self.retrain_runs = Counter(
            "retrain_runs_total",
            "Finished retrain jobs, by model and status (succeeded or failed).",
            ["model", "status"],
            registry=r,
        )
        self.retrain_duration = Histogram(
            "retrain_duration_seconds",
            "Wall time of retrain jobs.",
            ["model"],
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.retrain_in_progress = Gauge(
            "retrain_in_progress", "1 while a retrain job of the model runs.", ["model"], registry=r
        )
        self.log_written = Counter(
            "prediction_log_written_total", "Prediction-log rows written.", registry=r
        )
        self.log_write_failures = Counter(
            "prediction_log_write_failures_total",
            "Prediction-log rows lost because a database write failed.",
            registry=r,
        )
        self.log_dropped = Counter(
            "prediction_log_dropped_total",
            "Prediction-log rows dropped because the write queue was full.",
            registry=r,
        )
        self.log_queue_depth = Gauge(
            "prediction_log_queue_depth", "Rows waiting to be written.", registry=r
        )

    def model_served(self, model: str, version: str, previous: str | None) -> None:
        if previous is not None and previous != version:
            self.model_version_info.remove(model, previous)
            self.model_swaps.labels(model).inc()
        self.model_version_info.labels(model, version).set(1)
        self.model_loaded.labels(model).set(1)

    def model_unloaded(self, model: str) -> None:
        self.model_loaded.labels(model).set(0)

    def model_load_failed(self, model: str) -> None:
        self.model_load_failures.labels(model).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

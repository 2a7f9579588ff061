"""Prometheus metrics, held in an object with its own registry so tests stay independent.

With several uvicorn workers, ``run_api.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start; every worker then writes its values to files there and a scrape of any one
worker aggregates them all (prometheus_client's multiprocess mode). Each gauge says how its
per-worker values combine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

# Sub-millisecond to multi-second: single-row predictions take ~0.1 ms, batches seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip
VALUE_BUCKETS = (
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 7.5, 10.0, 25.0, 50.0, 100.0,
    1000.0,
)  # fmt: skip
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 10000)
CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


M = TypeVar("M", Counter, Gauge, Histogram)


@dataclass(frozen=True)
class Declared:
    """One metric as the service declares it: what the reference documentation lists."""

    name: str  # as exposed (a counter's ends in _total)
    type: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series double the exposition and no dashboard reads them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        self._process = psutil.Process(os.getpid())
        r = self.registry
        if not self.multiprocess:
            ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes

        # Every metric is declared through here, so the reference documentation lists them
        # (name, type, labels, help) from this object, not from a copy by hand.
        self.declared: list[Declared] = []

        def declare(kind: type[M], name: str, doc: str, labels: Sequence[str] = (), **kw: Any) -> M:
            kw.pop("registry", None)
            exposed = name + "_total" if kind is Counter and not name.endswith("_total") else name
            self.declared.append(Declared(exposed, kind.__name__.lower(), tuple(labels), doc))
            return kind(name, doc, labels, registry=r, **kw)

        def gauge(name: str, doc: str, labels: list[str], mode: str) -> Gauge:
            return declare(Gauge, name, doc, labels, multiprocess_mode=mode)

        # -- HTTP --------------------------------------------------------------------------
        self.http_requests = declare(
            Counter,
            "http_requests_total",
            "HTTP requests served, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = declare(
            Histogram,
            "http_request_duration_seconds",
            "Time from request start to response end, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = gauge(
            "http_requests_in_flight", "Requests being handled right now.", [], "livesum"
        )
        self.auth_failures = declare(
            Counter,
            "auth_failures_total",
            "Requests refused by access control, by scope and reason (missing, invalid, "
            "forbidden, disabled, client_blocked).",
            ["scope", "reason"],
            registry=r,
        )
        self.rate_limited = declare(
            Counter,
            "rate_limited_total",
            "Requests refused because an API key was over its rate.",
            ["key"],
            registry=r,
        )
        # -- predictions -------------------------------------------------------------------
        self.predictions = declare(
            Counter,
            "predictions_total",
            "Predicted rows, by model, the version that answered and the protocol asked "
            "(native, explain, v2, v2_grpc, mlflow: each registered protocol's name).",
            ["model", "version", "protocol"],
            registry=r,
        )
        self.prediction_latency = declare(
            Histogram,
            "prediction_duration_seconds",
            "Time spent in the model per request (one row or one batch).",
            ["model", "version", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Adaptive batching (a spec's serving.batching): what each model call held, and how
        # long each request waited for its call.
        self.batch_rows = declare(
            Histogram,
            "prediction_batch_rows",
            "Rows per model call of a batched model (adaptive batching).",
            ["model", "version"],
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.batch_wait = declare(
            Histogram,
            "prediction_batch_wait_seconds",
            "Time a request of a batched model waited for its model call.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction_errors = declare(
            Counter,
            "prediction_errors_total",
            "Prediction requests that failed, by model, reason (invalid_input, batch_too_large, "
            "model_not_loaded, unknown_model, model_error) and protocol.",
            ["model", "reason", "protocol"],
            registry=r,
        )
        self.prediction_value = declare(
            Histogram,
            "prediction_value",
            "Predicted values of regression models.",
            ["model", "version"],
            buckets=VALUE_BUCKETS,
            registry=r,
        )
        self.predicted_class = declare(
            Counter,
            "predicted_class_total",
            "Predicted classes of classification models.",
            ["model", "version", "class"],
            registry=r,
        )
        self.prediction_confidence = declare(
            Histogram,
            "prediction_confidence",
            "Probability of the predicted class (classification models).",
            ["model", "version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        # -- models ------------------------------------------------------------------------
        self.model_loaded = gauge(
            "model_loaded", "1 when the model is loaded and serving, else 0.", ["model"], "min"
        )
        self.model_version_info = gauge(
            "model_version_info",
            "1 for the version each model is serving.",
            ["model", "version"],
            "max",
        )
        self.model_load_failures = declare(
            Counter,
            "model_load_failures_total",
            "Attempts to load a model version that failed.",
            ["model"],
            registry=r,
        )
        self.model_swaps = declare(
            Counter,
            "model_swaps_total",
            "Times the served version of a model changed without a restart.",
            ["model"],
            registry=r,
        )
        self.challenger_percent = gauge(
            "model_challenger_traffic_percent",
            "Share of a model's requests routed to its challenger version.",
            ["model"],
            "max",
        )
        self.shadow_percent = gauge(
            "model_shadow_traffic_percent",
            "Share of a model's requests copied to its challenger as a shadow (answered by "
            "the champion).",
            ["model"],
            "max",
        )
        # -- shadows -----------------------------------------------------------------------
        self.shadow_predictions = declare(
            Counter,
            "shadow_predictions_total",
            "Rows a shadow predicted (answered to no one; logged with arm=shadow).",
            ["model", "version"],
            registry=r,
        )
        self.shadow_dropped = declare(
            Counter,
            "shadow_dropped_total",
            "Rows not given to a shadow because it fell behind (its queue was full).",
            ["model"],
            registry=r,
        )
        self.shadow_cpu = declare(
            Counter,
            "shadow_cpu_seconds_total",
            "CPU time the shadow's thread spent predicting and building its log rows.",
            ["model"],
            registry=r,
        )
        self.shadow_active = gauge(
            "shadow_active", "1 while a shadow of the model is being judged.", ["model"],
            "mostrecent",
        )  # fmt: skip
        self.shadow_labels = gauge(
            "shadow_labels",
            "Labelled pairs (the champion's and the shadow's prediction of one input, with its "
            "ground truth) of the shadow being judged.",
            ["model"],
            "mostrecent",
        )
        self.shadow_live_quality = gauge(
            "shadow_live_quality",
            "Live quality of each arm (champion, shadow) on the labelled pairs: accuracy for "
            "classifiers, mae for regressors.",
            ["model", "arm", "metric"],
            "mostrecent",
        )
        self.shadow_agreement = gauge(
            "shadow_agreement",
            "Over the last hour of pairs: the share where the shadow predicts the champion's "
            "class (classifiers), or the mean absolute difference of their values "
            "(regressors).",
            ["model", "measure"],
            "mostrecent",
        )
        # -- retraining --------------------------------------------------------------------
        self.retrain_runs = declare(
            Counter,
            "retrain_runs_total",
            "Finished retrain jobs, by model and status (succeeded or failed).",
            ["model", "status"],
            registry=r,
        )
        self.retrain_duration = declare(
            Histogram,
            "retrain_duration_seconds",
            "Wall time of retrain jobs.",
            ["model"],
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.retrain_in_progress = gauge(
            "retrain_in_progress", "1 while a retrain job of the model runs.", ["model"], "max"
        )
        # -- automation --------------------------------------------------------------------
        self.model_events = declare(
            Counter,
            "model_events_total",
            "Automation and lifecycle decisions, by model and event type (retrain_triggered, "
            "retrain_succeeded, retrain_failed, canary_started, promoted, rolled_back).",
            ["model", "type"],
            registry=r,
        )
        self.canary_active = gauge(
            "canary_active",
            "1 while a canary of the model is being judged.",
            ["model"],
            "mostrecent",
        )
        self.canary_labels = gauge(
            "canary_labels",
            "Labelled predictions of each canary arm (champion or challenger) so far.",
            ["model", "arm"],
            "mostrecent",
        )
        self.canary_live_quality = gauge(
            "canary_live_quality",
            "Live quality of each canary arm: accuracy for classifiers, mae for regressors.",
            ["model", "arm", "metric"],
            "mostrecent",
        )
        # -- live quality and drift --------------------------------------------------------
        self.feedback = declare(
            Counter,
            "feedback_total",
            "Ground-truth values received, by model and the version that predicted.",
            ["model", "version"],
            registry=r,
        )
        self.live_quality = gauge(
            "model_live_quality",
            "Quality over recent feedback: accuracy for classifiers, mae and rmse for regressors.",
            ["model", "version", "metric"],
            "mostrecent",
        )
        self.live_quality_threshold = gauge(
            "model_live_quality_threshold",
            "The spec's bound on live quality (bound: min or max), for the LiveQualityLow alert.",
            ["model", "metric", "bound"],
            "max",
        )
        self.drift_psi = gauge(
            "feature_drift_psi",
            "Population stability index of a feature, recent traffic vs training data.",
            ["model", "feature"],
            "mostrecent",
        )
        self.drift_pvalue = gauge(
            "feature_drift_ks_pvalue",
            "Two-sample Kolmogorov-Smirnov p-value, recent traffic vs training data.",
            ["model", "feature"],
            "mostrecent",
        )
        self.drift_detected = gauge(
            "feature_drift_detected",
            "1 when the feature's recent distribution has drifted from the training data.",
            ["model", "feature"],
            "mostrecent",
        )
        self.prediction_drift_psi = gauge(
            "prediction_drift_psi",
            "Population stability index of the predictions, recent vs training data.",
            ["model"],
            "mostrecent",
        )
        self.drift_window = gauge(
            "drift_window_rows",
            "Recent predictions the last drift check compared (0: insufficient data).",
            ["model"],
            "mostrecent",
        )
        # -- prediction log ----------------------------------------------------------------
        self.log_written = declare(
            Counter, "prediction_log_written_total", "Prediction-log rows written.", registry=r
        )
        self.log_write_failures = declare(
            Counter,
            "prediction_log_write_failures_total",
            "Prediction-log rows lost, by reason: database (it failed, retries included), "
            "row (the database refused that row), encode.",
            ["reason"],
            registry=r,
        )
        for reason in ("database", "row", "encode"):  # every series exists from the start
            self.log_write_failures.labels(reason)
        self.log_dropped = declare(
            Counter,
            "prediction_log_dropped_total",
            "Prediction-log rows dropped because the write queue was full.",
            registry=r,
        )
        self.log_backpressure = declare(
            Counter,
            "prediction_log_backpressure_seconds",
            "Time requests spent waiting for room in a full prediction-log queue.",
            registry=r,
        )
        self.log_queue_depth = gauge(
            "prediction_log_queue_depth", "Rows waiting to be written.", [], "livesum"
        )
        self.log_failing = gauge(
            "prediction_log_failing",
            "1 while the prediction log's writes fail (rows are counted as lost), else 0.",
            [],
            "max",
        )
        self.log_file_recreated = declare(
            Counter,
            "prediction_log_file_recreated_total",
            "Times the prediction log's SQLite file was found removed or replaced, and a new "
            "one made.",
            registry=r,
        )
        # -- the log's lifecycle: retention and archive (storage/archive.py) -----------------
        self.log_retention = gauge(
            "prediction_log_retention_seconds",
            "How long the model's rows stay in the live table before they are archived (NaN: "
            "kept until deleted by hand).",
            ["model"],
            "max",
        )
        self.log_live_rows = gauge(
            "prediction_log_live_rows",
            "Rows of the model in the live table, read at each retention run.",
            ["model"],
            "mostrecent",
        )
        self.log_oldest_age = gauge(
            "prediction_log_oldest_row_age_seconds",
            "Age of the model's oldest row in the live table, read at each retention run.",
            ["model"],
            "mostrecent",
        )
        self.log_archived_rows = declare(
            Counter,
            "prediction_log_archived_rows_total",
            "Rows written to the archive (Parquet), verified, by model.",
            ["model"],
            registry=r,
        )
        self.log_deleted_rows = declare(
            Counter,
            "prediction_log_deleted_rows_total",
            "Rows deleted from the live table after their archive was verified, by model.",
            ["model"],
            registry=r,
        )
        self.log_archive_failures = declare(
            Counter,
            "prediction_log_archive_failures_total",
            "Retention runs that failed for a model (the rows stay live; the next run retries).",
            ["model"],
            registry=r,
        )
        # -- the service processes (summed over workers) -----------------------------------
        self.memory = gauge(
            "service_resident_memory_bytes",
            "Resident memory of the service, summed over its workers.",
            [],
            "livesum",
        )
        self.cpu = gauge(
            "service_cpu_seconds_total",
            "CPU time used by the service, summed over its workers.",
            [],
            "livesum",
        )
        self.workers = gauge("service_workers", "Worker processes serving.", [], "livesum")
        self.workers.set(1)

    def model_served(self, model: str, version: str, previous: str | None) -> None:
        if previous is not None and previous != version:
            # Set to 0 rather than removed: in multiprocess mode a removed series lingers.
            self.model_version_info.labels(model, previous).set(0)
            self.model_swaps.labels(model).inc()
        self.model_version_info.labels(model, version).set(1)
        self.model_loaded.labels(model).set(1)

    def model_unloaded(self, model: str) -> None:
        self.model_loaded.labels(model).set(0)

    def model_load_failed(self, model: str) -> None:
        self.model_load_failures.labels(model).inc()

    def sample_process(self) -> None:
        self.memory.set(self._process.memory_info().rss)
        times = self._process.cpu_times()
        self.cpu.set(times.user + times.system)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics and their content type: OpenMetrics (which carries exemplars) when
        ``accept`` asks for it, as Prometheus does with exemplar storage on; else text."""
        self.sample_process()
        encode, content_type = choose_encoder(accept or "")
        if self.multiprocess:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return encode(merged), content_type
        return encode(self.registry), content_type

    def close(self) -> None:
        """A worker leaving: its live* gauges stop counting."""
        directory = multiprocess_dir()
        if directory:
            multiprocess.mark_process_dead(os.getpid(), directory)

"""The core, built without the web framework: every transport is handed one ``Core``.

``build_core(settings)`` assembles the parts (nothing starts yet); ``start()`` brings the
prediction-log schema to head (under a database lock, so replicas starting together do not
race), loads every champion, starts the log writer and the background loops (registry
polls, drift checks); ``close()`` stops them and drains the log. The HTTP app, the gRPC
server and the tests all use the same object.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from prediction_service import logs, shortcuts, tracing
from prediction_service.access import AccessControl
from prediction_service.access import summary as access_summary
from prediction_service.metrics import Metrics
from prediction_service.registry import Registry
from prediction_service.serving.automation import Automation
from prediction_service.serving.codec import FeatureCodec, example_row
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.serving.model_store import ModelStore
from prediction_service.serving.monitoring import Monitor
from prediction_service.serving.predictions import PredictionService
from prediction_service.serving.retention import LogRetention
from prediction_service.serving.retrain import HEARTBEAT_S, RetrainRunner
from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec, load_specs
from prediction_service.storage.automation_state import StateStore
from prediction_service.storage.db import make_engine, migrate, reachable
from prediction_service.storage.events import EventStore
from prediction_service.storage.jobs import JobStore
from prediction_service.storage.leases import LeaseStore
from prediction_service.storage.prediction_log import PredictionLog
from prediction_service.storage.traffic import TrafficStore

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    specs: dict[str, ModelSpec]
    metrics: Metrics
    engine: Engine
    registry: Registry
    store: ModelStore
    lifecycle: ModelLifecycle
    prediction_log: PredictionLog
    predictions: PredictionService
    monitor: Monitor
    retrain: RetrainRunner
    automation: Automation
    access: AccessControl
    retention: LogRetention
    started_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _loops: list[threading.Thread] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.started_at > 0

    def start(self) -> None:
        """Bring everything up; a database or registry that is down is reported, not fatal."""
        if self.started:
            return
        self.started_at = time.monotonic()
        log.info("%s", access_summary(self.access))
        try:
            migrate(self.engine)
        except Exception as exc:  # noqa: BLE001 - predictions work without the log; counted
            log.error("prediction log database unavailable at start-up: %s", exc)
        self.lifecycle.sync_all()
        try:
            interrupted = self.retrain.recover()
            if interrupted:
                log.warning("marked %d interrupted retrain job(s) as failed", interrupted)
        except Exception as exc:  # noqa: BLE001 - the database may be down; serving goes on
            log.error("could not check for interrupted retrain jobs: %s", exc)
        self.prediction_log.start()
        self.predictions.shadows.start()
        s = self.settings
        self._every(s.reload_interval_s, self.lifecycle.sync_all)
        self._every(s.traffic_interval_s, self.lifecycle.follow)
        self._every(s.drift_interval_s, self.monitor.check_all)
        self._every(HEARTBEAT_S, self.retrain.heartbeat)
        if self.automation.models:
            self._every(s.automation_interval_s, self.automation.tick)
        if self.retention.active:
            self._every(s.log_retention_interval_s, self.retention.tick)
        if self.metrics.multiprocess:
            # A scrape samples only the worker it reaches; the others must sample themselves.
            self._every(5.0, self.metrics.sample_process)

    def close(self) -> None:
        """Stop the loops and retrain jobs, write every queued prediction, release the pool."""
        self._stop.set()
        for thread in self._loops:
            thread.join(10.0)
        if self.started:
            self.automation.release()
            if self.retention.active:
                self.retention.release()
        self.retrain.shutdown()
        self.predictions.shadows.close()  # its last rows go to the log, which closes next
        self.prediction_log.close()
        self.engine.dispose()
        self.metrics.close()
        tracing.shutdown()  # after the log: the writer's last spans are exported too

    def database_reachable(self) -> bool:
        return reachable(self.engine)

    def _every(self, interval_s: float, job: Callable[[], None]) -> None:
        """Run ``job`` every ``interval_s`` on a thread of its own until ``close``.

        The first run waits a random part of the interval, so several workers or replicas
        spread their registry polls instead of arriving together.
        """
        name = getattr(job, "__qualname__", repr(job))

        def loop() -> None:
            wait = random.uniform(0, interval_s)  # nosec B311 - jitter, not security
            while not self._stop.wait(wait):
                try:
                    job()
                except Exception:  # noqa: BLE001 - keep going whatever happened this round
                    log.exception("background job %s failed", name)
                wait = interval_s

        thread = threading.Thread(target=loop, name=f"every-{name}", daemon=True)
        self._loops.append(thread)
        thread.start()


def build_core(settings: Settings, metrics: Metrics | None = None) -> Core:
    """Assemble the core for ``settings``; nothing runs until ``start()``."""
    shortcuts.configure(settings.shortcuts, settings.max_header_bytes, settings.header_timeout_s)
    logs.json_lines = settings.log_format == "json"
    tracing.configure()
    specs = load_specs(settings.specs_path)
    metrics = metrics or Metrics()
    engine = make_engine(settings.effective_database_url)
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    store = ModelStore(specs, registry, metrics, settings.home)
    lifecycle = ModelLifecycle(store, registry, TrafficStore(engine), EventStore(engine, metrics))
    prediction_log = PredictionLog(
        engine,
        metrics,
        max_queue=settings.log_queue_size,
        batch_size=settings.log_batch_size,
        flush_interval_s=settings.log_flush_interval_s,
        full_wait_s=settings.log_full_wait_s,
        required=settings.log_required,
    )
    monitor = Monitor(store, prediction_log, metrics, settings)
    codecs = {
        name: FeatureCodec(spec, settings.max_batch_size, example_row(spec, settings.home))
        for name, spec in specs.items()
    }
    predictions = PredictionService(
        store, codecs, prediction_log, metrics, work_limit_s=settings.graceful_timeout_s / 2
    )
    retrain = RetrainRunner(settings, JobStore(engine), lifecycle, metrics)
    leases, states = LeaseStore(engine), StateStore(engine)
    automation = Automation(settings, retrain, monitor, predictions, leases, states, metrics)
    return Core(
        settings=settings,
        specs=specs,
        metrics=metrics,
        engine=engine,
        registry=registry,
        store=store,
        lifecycle=lifecycle,
        prediction_log=prediction_log,
        predictions=predictions,
        monitor=monitor,
        retrain=retrain,
        automation=automation,
        access=AccessControl.from_settings(settings, metrics),
        retention=LogRetention(engine, specs, settings, metrics, leases, states),
    )

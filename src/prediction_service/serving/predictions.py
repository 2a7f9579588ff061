"""Predictions as plain values: a matrix in, a typed result out, whatever the protocol.

Every protocol calls ``PredictionService.predict``, so a prediction is routed between champion
and challenger, counted, and logged the same way whichever door it came in by.
"""

from __future__ import annotations

import itertools
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from prediction_service import tracing
from prediction_service.errors import BatchTooLargeError, NotExplainableError, OverloadedError
from prediction_service.metrics import Metrics
from prediction_service.predictors.explainers import Explainer, additivity_error, tolerance
from prediction_service.predictors.shapley import Explanation
from prediction_service.serving.batching import ModelCall, Steps, run
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.model_store import ModelStore, ServedModel
from prediction_service.serving.shadow import ShadowRunner
from prediction_service.shortcuts import observe_many, observe_one
from prediction_service.storage.prediction_log import LogBatch, PredictionLog

# Up to this many rows, outputs are shaped and counted in plain Python.
_FEW_ROWS = 16


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model answered for the rows of one request."""

    model: str
    registered_name: str
    version: str
    ids: list[str]  # one prediction id per row
    values: list[Any]  # per row: the predicted value, or the predicted class's name
    latency_ms: float  # time in the model, for all the rows
    classes: tuple[str, ...] | None = None  # classifiers only
    probabilities: np.ndarray | None = None  # (rows, classes), classifiers only

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Instruments:
    """One model version's metric children, looked up once (labels() costs microseconds),
    and its requests in this process, answered and failed (a canary's error-rate guardrail;
    an attribute here costs a request 28 ns where a Counter keyed by (model, version) cost
    198, timeit on this machine)."""

    predictions: dict[str, Any]  # by protocol, created on first use
    latency: dict[str, Any]
    values: Any  # regression: predicted values; classification: confidence
    classes: dict[str, Any]
    answered: int = 0
    failed: int = 0


class Ids:
    """Unique ids without a system call each: a random per-process prefix and a counter, 32
    hex digits (``secrets.token_hex`` per request id was a getrandom call: 12 us of the 39
    us a single-row request took in-process here, bench/profile_request.py)."""

    PATTERN = re.compile(r"[0-9a-f]{32}")

    def __init__(self) -> None:
        # %-formatting bound once: 1.7 ms for 10,000 ids where an f-string per id took 2.0.
        self._format = (secrets.token_hex(8) + "%016x").__mod__
        self._count = itertools.count()

    def next(self) -> str:
        return self._format(next(self._count))

    def take(self, n: int) -> list[str]:
        return list(map(self._format, itertools.islice(self._count, n)))


class PredictionService:
    """What every protocol calls: the models' codecs (payload in, matrix out) and
    ``predict`` (matrix in, typed result out), logged and counted the same way for all."""

    def __init__(
        self,
        store: ModelStore,
        codecs: dict[str, FeatureCodec],
        log: PredictionLog,
        metrics: Metrics,
        work_limit_s: float = 5.0,
        shadows: ShadowRunner | None = None,
    ) -> None:
        self.store = store
        self.codecs = codecs
        self.log = log
        self.metrics = metrics
        # The longest one call's work may take: it must end within a shutdown's grace.
        self.work_limit_s = work_limit_s
        self._instruments: dict[tuple[str, str], _Instruments] = {}
        self.ids = Ids()
        self.shadows = shadows or ShadowRunner(log, metrics, self.ids)

    def codec(self, name: str) -> FeatureCodec:
        """The named model's codec; 404 naming the known models for any other name."""
        codec = self.codecs.get(name)
        if codec is None:
            self.store.spec(name)  # raises UnknownModelError
        return codec  # type: ignore[return-value]

    def predict(
        self,
        name: str,
        X: np.ndarray,
        protocol: str,
        request_id: str | None = None,
        version: str | None = None,
    ) -> Prediction:
        """``predicting``, driven in this thread (a batched version's model is called
        directly: a thread has no batch to join)."""
        return run(self.predicting(name, X, protocol, request_id, version))

    def predicting(
        self,
        name: str,
        X: np.ndarray,
        protocol: str,
        request_id: str | None = None,
        version: str | None = None,
    ) -> Steps[Prediction]:
        """Predict the rows of ``X`` (checked by the model's codec, in the spec's feature order).

        Without ``version``, the champion answers, or for a share of requests the challenger;
        with it, that served version answers. A version that batches is asked through a
        ``ModelCall`` step (serving/batching.py): on the event loop it joins a batch.
        """
        store = self.store
        if self.log.required and self.log.failing_since is not None:
            raise OverloadedError(
                "predictions are logged or not made (PREDICT_LOG_REQUIRED), and the "
                f"prediction log cannot be written: {self.log.last_error}",
                5,
            )
        model = store.choose(name, request_id) if version is None else store.served(name, version)
        trace = tracing.current() if tracing.enabled else None
        if trace is not None and not trace.predicted:
            trace.predicted = time.time_ns()
        started = time.perf_counter()
        try:
            batcher = model.batcher
            out = model.predict(X) if batcher is None else (yield ModelCall(batcher, X))
        except Exception:
            self.metrics.prediction_errors.labels(name, "model_error", protocol).inc()
            self._instruments_for(model).failed += 1
            raise
        elapsed = time.perf_counter() - started
        if trace is not None:
            trace.model_done = time.time_ns()
        n = len(X)
        inst = self._instruments_for(model)
        inst.answered += 1
        counter = inst.predictions.get(protocol)
        if counter is None:
            counter = inst.predictions[protocol] = self.metrics.predictions.labels(
                name, model.version, protocol
            )
        counter.inc(n)
        if trace is not None:  # the trace id as an exemplar
            inst.latency["single" if n == 1 else "batch"].observe(
                elapsed, {"trace_id": trace.trace_id}
            )
        else:
            observe_one(inst.latency["single" if n == 1 else "batch"], elapsed)
        ids = self.ids.take(n)
        classes, rows = model.classes, out.tolist()
        best = None if classes is None else self._best(out, rows)
        self._count(inst, out, rows, best, classes)
        latency_ms = elapsed * 1000.0
        # Features and probabilities stay arrays, not lists of lists: numpy arrays are not
        # tracked by the garbage collector, so rows waiting for the writer keep collections
        # short (a flat list of numbers is one tracked object).
        self.log.record(
            LogBatch(
                model=name,
                version=model.version,
                created_at=time.time(),
                request_id=request_id,
                latency_ms=latency_ms / n,
                feature_names=model.spec.feature_names,
                ids=ids,
                features=X,
                predictions=rows if best is None else best,
                probabilities=None if best is None else out,
                classes=classes,
                protocol=protocol,
                # A sampled trace's id (tracing.current): one that a tracing backend holds.
                trace_id=None if trace is None else trace.trace_id,
                span=None if trace is None else trace.context,
            )
        )
        if trace is not None:
            trace.logged = time.time_ns()
            trace.set(**{
                "model.name": name, "model.version": model.version, "model.rows": n,
                "model.arm": "champion" if store.loaded(name) is model else "challenger",
            })  # fmt: skip
        shadow = store.shadows.get(name) if version is None else None
        if shadow is not None and shadow[0] is not model:
            # A copy for the challenger as a shadow, predicted off this answer's path.
            if shadow[1] >= 100.0 or random.random() * 100.0 < shadow[1]:  # nosec B311
                self.shadows.offer(shadow[0], X, ids, protocol)
        if trace is not None:
            trace.returned = time.time_ns()
        if classes is None or best is None:
            return Prediction(
                name, model.spec.registered_name, model.version, ids, rows, latency_ms
            )
        return Prediction(
            name,
            model.spec.registered_name,
            model.version,
            ids,
            [classes[b] for b in best],
            latency_ms,
            classes,
            out,
        )

    def explain(
        self, name: str, X: np.ndarray, protocol: str, request_id: str | None = None
    ) -> tuple[Prediction, Explanation, Explainer]:
        """The champion's prediction of the rows of ``X``, their explanation, and the
        explainer that made it (its method and output). Logged and counted like any
        prediction, under ``protocol``; no A/B split. An explanation that does not add up
        to the model's output within its tolerance is an error, never an answer."""
        model = self.store.get(name)
        explainer = model.explainer
        if explainer is None:  # counted by the endpoint that answers it, as every refusal
            raise NotExplainableError(
                f"{name} version {model.version} cannot be explained: {model.unexplained}"
            )
        most = int(self.work_limit_s / model.explain_row_s) if model.explain_row_s else len(X)
        if len(X) > max(most, 1):
            raise BatchTooLargeError(
                f"explaining {len(X)} rows of {name} version {model.version} takes about "
                f"{len(X) * model.explain_row_s:.0f} s, longer than one call may "
                f"({self.work_limit_s:g} s, half the shutdown grace): send at most {most} rows"
            )
        trace = tracing.current() if tracing.enabled else None
        if trace is not None:  # the explanation is the predict span's work
            trace.predicted = time.time_ns()
        explanation = explainer.explain(X)
        worst = float((additivity_error(explanation) / tolerance(explanation.output)).max())
        if worst > 1:
            raise RuntimeError(
                f"{name} version {model.version}: the {explainer.method} explanation is off "
                f"by {worst:.3g} times its tolerance"
            )
        p = self.predict(name, X, protocol, request_id, model.version)
        return p, explanation, explainer

    def requests(self, name: str, version: str) -> tuple[int, int]:
        """The requests ``version`` answered and failed in this process."""
        inst = self._instruments.get((name, version))
        return (inst.answered, inst.failed) if inst else (0, 0)

    def _instruments_for(self, model: ServedModel) -> _Instruments:
        key = (model.name, model.version)
        inst = self._instruments.get(key)
        if inst is None:
            m, name, version = self.metrics, model.name, model.version
            values = m.prediction_value if model.classes is None else m.prediction_confidence
            inst = _Instruments(
                predictions={},
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
    def _best(out: np.ndarray, rows: list[list[float]]) -> list[int]:
        """Index of each row's most probable class (the first of equal maxima)."""
        if len(rows) <= _FEW_ROWS:  # numpy's per-call overhead costs more than a few rows
            return [max(range(len(r)), key=r.__getitem__) for r in rows]
        return out.argmax(axis=1).tolist()

    @staticmethod
    def _count(
        inst: _Instruments, out: np.ndarray, rows: list[Any], best: list[int] | None, classes: Any
    ) -> None:
        """The prediction-value (or confidence) histogram and the predicted-class counters:
        one by one for a few rows, in one pass per metric for a batch."""
        if len(rows) <= _FEW_ROWS:
            if best is None:
                for v in rows:
                    observe_one(inst.values, v)
                return
            for r, b in zip(rows, best):
                observe_one(inst.values, r[b])
                inst.classes[classes[b]].inc()
            return
        if best is None:
            observe_many(inst.values, out)
            return
        index = np.asarray(best)
        observe_many(inst.values, out[np.arange(len(out)), index])
        for cls, count in zip(classes, np.bincount(index, minlength=len(classes)).tolist()):
            if count:
                inst.classes[cls].inc(count)

"""The champion of every spec, loaded and swapped atomically.

A version is served from its portable predictor (the arrays training stored beside it) when
it has one, so loading unpickles no scikit-learn or LightGBM object; otherwise from the
model's native MLflow flavour.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from prediction_service.data import load_dataset
from prediction_service.domain import ReferenceStats
from prediction_service.errors import ModelNotLoadedError, NotFoundError, UnknownModelError
from prediction_service.metrics import Metrics
from prediction_service.predictors import explainers
from prediction_service.predictors.explainers import Explainer
from prediction_service.predictors.portable import Arrays, PredictFn, from_bundle, make_predictor
from prediction_service.registry import ModelVersionInfo, Registry
from prediction_service.registry.store import BACKGROUND_FILE, PREDICTOR_FILE, REFERENCE_FILE
from prediction_service.serving.batching import Batcher, row_cost
from prediction_service.specs import ModelSpec

log = logging.getLogger(__name__)


def warmup_rows(spec: ModelSpec, n: int = 16) -> np.ndarray:
    """Deterministic rows spread over every feature's valid range."""
    rng = np.random.default_rng(0)
    lows = np.array([f.min for f in spec.features])
    highs = np.array([f.max for f in spec.features])
    return np.asarray(lows + rng.random((n, len(lows))) * (highs - lows))


@dataclass(frozen=True)
class Predictor:
    """One version's predictor, loaded as the service loads it, and what it was built from:
    the portable arrays (``bundle``) or, without them, the native model."""

    spec: ModelSpec
    info: ModelVersionInfo
    predict: PredictFn  # (n, features) -> (n,) values or (n, classes) probabilities
    kind: str  # "portable", "direct" (made portable at load) or "estimator"
    classes: tuple[str, ...] | None
    bundle: Arrays | None = None
    native: Any = None

    def rebuilt(self) -> Predictor:
        """The same predictor made again from its parts (in another process: the native
        kernel's arrays are addressed by pointer, so a predictor is shipped as its parts)."""
        if self.bundle is not None:
            loaded = from_bundle(self.bundle)
            if loaded is None:
                raise RuntimeError(f"{self.info.name} version {self.info.version}: the portable "
                                   "predictor does not reproduce its check rows here")  # fmt: skip
            return replace(self, predict=loaded[0])
        return replace(self, predict=make_predictor(self.native, self.spec.task,
                                                    warmup_rows(self.spec))[0])  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "predict": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "predict", self.rebuilt().predict)


def load_predictor(registry: Registry, spec: ModelSpec, version: str) -> Predictor:
    """``version`` of ``spec``'s model, warmed: from its portable form when it has one that
    reproduces its check rows, else from its MLflow flavour (made portable if it can be)."""
    info = registry.version_info(spec.registered_name, version)
    sample = warmup_rows(spec)
    bundle, loaded = _from_bundle(registry, info)
    if bundle is not None and loaded is not None:
        out = Predictor(spec, info, loaded[0], "portable", loaded[1], bundle=bundle)
    else:
        native: Any = registry.load_model(spec.registered_name, version)
        predict, kind = make_predictor(native, spec.task, sample)
        classes = tuple(str(c) for c in native.classes_) if spec.task == "classification" else None
        out = Predictor(spec, info, predict, kind, classes, native=native)
    out.predict(sample[:1])  # warm: first call pays lazy initialisation
    return out


def _from_bundle(
    registry: Registry, info: ModelVersionInfo
) -> tuple[Any, tuple[PredictFn, tuple[str, ...] | None] | None]:
    """The version's portable form and the predictor built from it (each may be None)."""
    if not info.run_id:
        return None, None
    try:
        bundle = registry.load_run_arrays(info.run_id, PREDICTOR_FILE)
    except Exception as exc:  # noqa: BLE001 - the native flavour still serves
        log.warning(
            "%s version %s: portable predictor unreadable: %s", info.name, info.version, exc
        )
        return None, None
    loaded = from_bundle(bundle) if bundle is not None else None
    if bundle is not None and loaded is None:
        log.warning(
            "%s version %s: portable predictor does not reproduce its check rows; "
            "loading the native model",
            info.name,
            info.version,
        )
    return bundle, loaded


@dataclass(frozen=True)
class ServedModel:
    spec: ModelSpec
    version: str
    info: ModelVersionInfo
    predict: PredictFn  # (n, features) -> (n,) values or (n, classes) probabilities
    predictor_kind: str
    classes: tuple[str, ...] | None
    loaded_at: float
    load_seconds: float
    reference: ReferenceStats | None = None  # training statistics for drift detection
    explainer: Explainer | None = None  # per-feature contributions (predictors/explainers)
    explain_row_s: float = 0.0  # what explaining one row took at load (a cost estimate)
    unexplained: str = "not loaded with an explainer"  # why explainer is None
    batcher: Batcher | None = None  # adaptive batching (serving/batching.py)
    batching: str = "off"  # in words: "on: ..." or "off[: why]"

    @property
    def name(self) -> str:
        return self.spec.name


class ModelStore:
    """Holds one ServedModel per spec. Reads never lock; a swap replaces the reference whole."""

    def __init__(
        self,
        specs: dict[str, ModelSpec],
        registry: Registry,
        metrics: Metrics,
        home: Path | None = None,  # where specs' data files are (versions without a background)
    ) -> None:
        self.specs = specs
        self.home = home
        self.registry = registry
        self.metrics = metrics
        self._models: dict[str, ServedModel] = {}
        self._challengers: dict[str, ServedModel] = {}
        self._split: dict[str, float] = {}
        # The challenger as a shadow: (model, share of requests copied to it).
        self.shadows: dict[str, tuple[ServedModel, float]] = {}
        self._errors: dict[str, str] = {}
        self._swap_lock = threading.Lock()

    def spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise UnknownModelError(name, sorted(self.specs))
        return spec

    def get(self, name: str) -> ServedModel:
        self.spec(name)
        model = self._models.get(name)
        if model is None:
            reason = self._errors.get(name, "not loaded yet")
            raise ModelNotLoadedError(f"model {name!r} is not loaded: {reason}")
        return model

    def choose(self, name: str, request_id: str | None) -> ServedModel:
        """The champion, or for a share of requests the challenger (sticky per request id)."""
        champion = self.get(name)
        percent = self._split.get(name)
        if percent:
            challenger = self._challengers.get(name)
            if challenger is not None:
                if request_id:
                    draw = zlib.crc32(request_id.encode()) % 10_000 / 100.0
                else:
                    draw = random.random() * 100.0  # nosec B311 - a traffic split
                if draw < percent:
                    return challenger
        return champion

    def served(self, name: str, version: str) -> ServedModel:
        """The champion or the challenger, whichever is ``version``."""
        champion = self.get(name)
        if champion.version == version:
            return champion
        challenger = self._challengers.get(name)
        if challenger is not None and challenger.version == version:
            return challenger
        serving = f"champion {champion.version}" + (
            f", challenger {challenger.version}" if challenger else ""
        )
        raise NotFoundError(f"{name} version {version!r} is not served (serving {serving})")

    def challenger(self, name: str) -> tuple[ServedModel | None, float]:
        return self._challengers.get(name), self._split.get(name, 0.0)

    def set_challenger(self, name: str, model: ServedModel | None, percent: float) -> None:
        with self._swap_lock:
            if model is None or percent <= 0:
                self._challengers.pop(name, None)
                self._split.pop(name, None)
            else:
                self._challengers[name] = model
                self._split[name] = percent
        self.metrics.challenger_percent.labels(name).set(percent if model is not None else 0)

    def set_shadow(self, name: str, model: ServedModel | None, percent: float) -> None:
        """Copy ``percent`` of ``name``'s requests to ``model`` (None or 0: no shadow)."""
        with self._swap_lock:
            if model is None or percent <= 0:
                self.shadows.pop(name, None)
            else:
                self.shadows[name] = (model, percent)
        self.metrics.shadow_percent.labels(name).set(percent if model is not None else 0)

    def not_ready(self) -> str | None:
        """Why the service cannot answer for every model yet, or None when it can."""
        missing = {
            n: self._errors.get(n, "not loaded") for n in self.specs if n not in self._models
        }
        if not missing:
            return None
        return "models not loaded: " + "; ".join(f"{n}: {why}" for n, why in missing.items())

    def loaded(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def error(self, name: str) -> str | None:
        return self._errors.get(name)

    def load_version(self, name: str, version: str) -> ServedModel:
        """Load and warm one version without serving it."""
        spec = self.spec(name)
        started = time.perf_counter()
        loaded = load_predictor(self.registry, spec, version)
        info, predict, sample = loaded.info, loaded.predict, warmup_rows(spec)
        explainer, unexplained = self.explainer_for(spec, info, loaded.bundle, predict)
        batcher, batching = self._batcher(spec, version, predict, sample[:1])
        explain_row_s = 0.0
        if explainer is not None:
            timed = time.perf_counter()
            explainer.explain(sample[:4])
            explain_row_s = (time.perf_counter() - timed) / 4
        reference = None
        if info.run_id:
            try:
                stats = self.registry.load_run_json(info.run_id, REFERENCE_FILE)
                reference = ReferenceStats.model_validate(stats)
            except Exception as exc:  # noqa: BLE001 - serving does not need it; drift reports it
                log.warning("%s version %s has no reference statistics: %s", name, version, exc)
        return ServedModel(
            spec=spec,
            version=version,
            info=info,
            predict=predict,
            predictor_kind=loaded.kind,
            classes=loaded.classes,
            loaded_at=time.time(),
            load_seconds=time.perf_counter() - started,
            reference=reference,
            explainer=explainer,
            explain_row_s=explain_row_s,
            unexplained=unexplained,
            batcher=batcher,
            batching=batching,
        )

    def _batcher(
        self, spec: ModelSpec, version: str, predict: PredictFn, row: np.ndarray
    ) -> tuple[Batcher | None, str]:
        """A batcher for ``predict`` when the spec asks for one and one row costs enough to
        gain from it; and what was decided, in words (the model's description)."""
        wanted = spec.serving.batching
        if wanted is None:
            return None, "off"
        cost = row_cost(predict, row)
        if cost * 1e6 < wanted.min_row_cost_us:
            log.info(
                "%s version %s: one row predicts in %.0f us, less than a hop to a worker "
                "thread costs; served unbatched", spec.name, version, cost * 1e6,
            )  # fmt: skip
            return None, f"off: one row predicts in {cost * 1e6:.0f} us, too cheap to batch"
        labels = (spec.name, version)
        batcher = Batcher(
            predict,
            wanted.max_batch_size,
            wanted.max_latency_ms,
            self.metrics.batch_rows.labels(*labels),
            self.metrics.batch_wait.labels(*labels),
        )
        return batcher, (
            f"on: up to {wanted.max_batch_size} rows a call, {wanted.max_latency_ms:g} ms at "
            f"most in the queue (one row predicts in {cost * 1e6:.0f} us)"
        )

    def explainer_for(
        self, spec: ModelSpec, info: ModelVersionInfo, bundle: Any, predict: PredictFn
    ) -> tuple[Explainer | None, str]:
        """The exact explainer the portable form describes, else Shapley values of the
        served predictor over the version's background rows (or, for a version trained
        before they were stored, rows of the spec's data file)."""
        why = ""
        if bundle is not None:
            found, why = explainers.from_bundle(bundle, spec.task)
            if found is not None:
                return found, ""
        background = self._background(spec, info)
        if background is None:
            return None, "; ".join(
                w for w in (why, "no background rows stored and no data file to draw them") if w
            )
        agnostic = explainers.model_agnostic(predict, spec.task, background)
        return explainers.checked(agnostic, warmup_rows(spec, 4))

    def _background(self, spec: ModelSpec, info: ModelVersionInfo) -> np.ndarray | None:
        if info.run_id:
            try:
                stored = self.registry.load_run_arrays(info.run_id, BACKGROUND_FILE)
                if stored is not None:
                    return stored["rows"]
            except Exception as exc:  # noqa: BLE001 - the data file may still serve
                log.warning(
                    "%s version %s: background unreadable: %s", spec.name, info.version, exc
                )
        if self.home is None:
            return None
        try:
            frame = load_dataset(spec, spec.data_file(self.home)).X[spec.feature_names]
        except Exception as exc:  # noqa: BLE001 - no background: explanations are refused
            log.warning("%s: no background rows for explanations: %s", spec.name, exc)
            return None
        log.info("%s version %s: background drawn from %s", spec.name, info.version, spec.data.path)
        return explainers.background_rows(frame.to_numpy(dtype=np.float64))

    def serve(self, model: ServedModel) -> ServedModel | None:
        """Swap ``model`` in; returns the one it replaced."""
        with self._swap_lock:
            old = self._models.get(model.name)
            self._models[model.name] = model
            self._errors.pop(model.name, None)
        self.metrics.model_served(model.name, model.version, old.version if old else None)
        log.info(
            "serving %s version %s (%s predictor, loaded in %.2fs)",
            model.name,
            model.version,
            model.predictor_kind,
            model.load_seconds,
        )
        return old

    def load_champion(self, name: str) -> ServedModel:
        """Serve the version the ``champion`` alias points at, unless it is already served."""
        spec = self.spec(name)
        try:
            version = self.registry.champion_version(spec.registered_name)
            if version is None:
                raise LookupError(
                    f"{spec.registered_name} has no 'champion' version in the registry; "
                    f"train it with `python -m prediction_service.training {name}`"
                )
            current = self._models.get(name)
            if current is not None and current.version == version:
                return current
            model = self.load_version(name, version)
        except Exception as exc:
            # A model already serving keeps serving; the error is still reported.
            self._errors[name] = f"{type(exc).__name__}: {exc}"
            self.metrics.model_load_failed(name)
            if name not in self._models:
                self.metrics.model_unloaded(name)
            raise
        self.serve(model)
        return model

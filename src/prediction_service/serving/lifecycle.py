"""Moving what is served: follow the registry, promote, roll back, split traffic."""

from __future__ import annotations

import logging
import threading
from typing import Any

from prediction_service.domain import ChampionChange, TrafficState, VersionGate, VersionSummary
from prediction_service.errors import ConflictError, InvalidInputError, NotFoundError
from prediction_service.registry import ModelVersionInfo, Registry
from prediction_service.registry.store import CHALLENGER
from prediction_service.serving.model_store import ModelStore, ServedModel
from prediction_service.storage.events import EventStore
from prediction_service.storage.traffic import Split, TrafficStore

log = logging.getLogger(__name__)


def _version_summary(info: ModelVersionInfo) -> VersionSummary:
    return VersionSummary(
        version=info.version,
        aliases=sorted(info.aliases),
        run_id=info.run_id,
        created_at_ms=info.created_at_ms,
        metrics=info.evaluation_metrics,
        candidate=info.params.get("candidate"),
        gate=VersionGate(
            decision=info.tags.get("gate_decision"),
            reason=info.tags.get("gate_reason"),
            previous_champion=info.tags.get("previous_champion"),
        ),
    )


class ModelLifecycle:
    def __init__(
        self, store: ModelStore, registry: Registry, traffic: TrafficStore, events: EventStore
    ) -> None:
        self.store = store
        self.registry = registry
        self.traffic = traffic
        self.events = events
        # One change at a time: a registry poll reads the stored splits, then applies them;
        # an admin change landing in between was overwritten by the stale read (a test
        # caught a 10% split surviving "set to 0" until the next poll).
        self._lock = threading.RLock()
        # Each model's stored split and champion change as this worker last applied them.
        self._applied: dict[str, Split] = {}

    # -- following the registry ------------------------------------------------------
    def _sync(self, name: str, splits: dict[str, Split] | None) -> None:
        """Serve the current champion (and challenger, if split); failures keep the old one."""
        try:
            self.store.load_champion(name)
        except Exception as exc:  # noqa: BLE001 - reported by the store; keep serving
            log.error("could not load the champion of %s: %s", name, exc)
        try:
            if splits is None:
                splits = self.traffic.all()
            self._applied[name] = split = splits.get(name, Split())
            self._sync_challenger(name, split.percent, split.shadow_percent)
        except Exception as exc:  # noqa: BLE001
            log.error("could not sync the challenger of %s: %s", name, exc)

    def sync_all(self) -> None:
        with self._lock:
            try:
                splits = self.traffic.all()
            except Exception as exc:  # noqa: BLE001 - a database outage must not stop reloads
                log.warning("traffic splits unavailable: %s", exc)
                splits = dict(self._applied)
            for name in self.store.specs:
                self._sync(name, splits)

    def follow(self) -> None:
        """Sync the models another worker changed since this one last looked: a split set or
        cleared, a canary started or ended, a champion promoted or rolled back through the
        service. One small query, run every ``traffic_interval_s``, so every worker serves
        the same versions within about a second rather than at its next registry poll."""
        with self._lock:
            try:
                splits = self.traffic.all()
            except Exception:  # noqa: BLE001 - the registry poll reports database outages
                return
            for name in self.store.specs:
                if splits.get(name, Split()) != self._applied.get(name, Split()):
                    self._sync(name, splits)

    def serve_new_champion(self, name: str) -> None:
        """Serve the champion the registry now names (a retrain job promoted it), and tell
        the other workers."""
        with self._lock:
            self._sync(name, None)
            self._champion_moved(name)

    def _store_split(self, name: str, percent: float) -> None:
        self.traffic.set(name, percent)
        self._applied[name] = self._applied.get(name, Split())._replace(percent=percent)

    def _store_shadow(self, name: str, percent: float) -> None:
        self.traffic.set_shadow(name, percent)
        self._applied[name] = self._applied.get(name, Split())._replace(shadow_percent=percent)

    def _champion_moved(self, name: str) -> None:
        try:
            change = self.traffic.champion_moved(name)
        except Exception as exc:  # noqa: BLE001 - the others follow at their registry poll
            log.warning("could not tell the other workers of %s's new champion: %s", name, exc)
            return
        self._applied[name] = self._applied.get(name, Split())._replace(champion_change=change)

    def _sync_challenger(
        self, name: str, percent: float, shadow_percent: float = 0.0
    ) -> ServedModel | None:
        """Serve the registered challenger to ``percent`` of the answers, and as a shadow to
        ``shadow_percent`` of the requests; neither when it is missing or the champion."""
        spec = self.store.spec(name)
        champion = self.store.loaded(name)
        version = self.registry.alias_version(spec.registered_name, CHALLENGER)
        if (
            max(percent, shadow_percent) <= 0
            or version is None
            or (champion and champion.version == version)
        ):
            self.store.set_challenger(name, None, 0.0)
            self.store.set_shadow(name, None, 0.0)
            return None
        current, _ = self.store.challenger(name)
        shadow, _ = self.store.shadows.get(name, (None, 0.0))
        model = next((m for m in (current, shadow) if m and m.version == version), None)
        if model is None:
            model = self.store.load_version(name, version)
        self.store.set_challenger(name, model if percent > 0 else None, percent)
        self.store.set_shadow(name, model if shadow_percent > 0 else None, shadow_percent)
        return model

    # -- admin actions ---------------------------------------------------------------
    def _load(self, name: str, version: str) -> ServedModel:
        spec = self.store.spec(name)
        try:
            return self.store.load_version(name, version)
        except Exception as exc:
            # Only now ask why: a missing version is 404, anything else cannot be served.
            if self.registry.find_version(spec.registered_name, version) is None:
                raise NotFoundError(f"{spec.registered_name} has no version {version}") from exc
            raise InvalidInputError(
                f"{spec.registered_name} version {version} cannot be loaded: {exc}"
            ) from exc

    def _make_champion(
        self, name: str, model: ServedModel, previous: str | None, record_previous: bool
    ) -> ChampionChange:
        spec = self.store.spec(name)
        challenger = self.registry.alias_version(spec.registered_name, CHALLENGER)
        self.registry.promote(
            spec.registered_name, model.version, previous if record_previous else None
        )
        if challenger == model.version:  # promoting the challenger ends the split and shadow
            self._store_split(name, 0.0)
            self._store_shadow(name, 0.0)
            self.store.set_challenger(name, None, 0.0)
            self.store.set_shadow(name, None, 0.0)
        self.store.serve(model)
        self._champion_moved(name)
        return ChampionChange(model=name, previous_version=previous, version=model.version)

    def promote(
        self,
        name: str,
        version: str,
        reason: str = "promoted by an admin request",
        details: dict[str, Any] | None = None,
    ) -> ChampionChange:
        with self._lock:
            change = self._promote(name, version)
        self.events.record(
            name, "promoted", reason, version, {**change.model_dump(), **(details or {})}
        )
        return change

    def _promote(self, name: str, version: str) -> ChampionChange:
        spec = self.store.spec(name)
        previous = self.registry.champion_version(spec.registered_name)
        return self._make_champion(name, self._load(name, version), previous, True)

    def rollback(self, name: str) -> ChampionChange:
        with self._lock:
            change = self._rollback(name)
        reason = (
            f"an admin restored version {change.version} "
            f"(the champion before {change.previous_version})"
        )
        self.events.record(name, "rolled_back", reason, change.version, change.model_dump())
        return change

    def conclude_canary(
        self, name: str, version: str, promote: bool, reason: str, details: dict[str, Any]
    ) -> None:
        """End a canary of ``version``, with the reason tagged on it. Promoted: it becomes the
        champion (which ends the split). Rolled back: no traffic, its challenger alias
        removed. The champion serves throughout."""
        spec = self.store.spec(name)
        decision = "promoted" if promote else "rolled_back"
        tags = {"canary_decision": decision, "canary_reason": reason}
        if promote:
            self.promote(name, version, reason, details)
            self.registry.set_version_tags(spec.registered_name, version, tags)
            return
        with self._lock:
            self._store_split(name, 0.0)
            self.store.set_challenger(name, None, 0.0)
            if self.registry.alias_version(spec.registered_name, CHALLENGER) == version:
                self.registry.delete_alias(spec.registered_name, CHALLENGER)
            self.registry.set_version_tags(spec.registered_name, version, tags)
        self.events.record(name, "rolled_back", reason, version, details)

    def conclude_shadow(
        self, name: str, version: str, outcome: str, reason: str, details: dict[str, Any]
    ) -> None:
        """End a shadow of ``version``, with the reason tagged on it: ``promoted`` (it
        becomes the champion), ``rolled_back`` (its challenger alias removed) or ``passed``
        (a canary of it follows). The champion answered throughout."""
        spec = self.store.spec(name)
        with self._lock:
            self._store_shadow(name, 0.0)
            self.store.set_shadow(name, None, 0.0)
        tags = {"shadow_decision": outcome, "shadow_reason": reason}
        if outcome == "promoted":
            self.promote(name, version, reason, details)
        elif outcome == "rolled_back":
            with self._lock:
                if self.registry.alias_version(spec.registered_name, CHALLENGER) == version:
                    self.registry.delete_alias(spec.registered_name, CHALLENGER)
            self.events.record(name, "rolled_back", reason, version, details)
        self.registry.set_version_tags(spec.registered_name, version, tags)

    def set_shadow(self, name: str, percent: float, reason: str | None = None) -> TrafficState:
        """Copy ``percent`` of the requests to the registered challenger as a shadow (0:
        stop); its answers go to no one. Starting one is an event (``reason``, or an
        admin's request)."""
        with self._lock:
            spec = self.store.spec(name)
            if (
                percent > 0
                and self.registry.alias_version(spec.registered_name, CHALLENGER) is None
            ):
                raise ConflictError(f"{spec.registered_name} has no 'challenger' version to shadow")
            before = self._applied.get(name, Split())
            model = self._sync_challenger(name, before.percent, percent)
            if percent > 0 and model is None:
                raise ConflictError(f"the challenger of {spec.registered_name} is the champion")
            self._store_shadow(name, percent)
            state = self.traffic_state(name)
        if model is not None and before.shadow_percent <= 0 < percent:
            self.events.record(
                name,
                "shadow_started",
                reason
                or f"an admin copies {percent:g}% of requests to version "
                f"{model.version} as a shadow",
                model.version,
                {"champion": state.champion_version, "shadow_percent": percent},
            )
        return state

    def _rollback(self, name: str) -> ChampionChange:
        spec = self.store.spec(name)
        current = self.registry.champion_version(spec.registered_name)
        if current is None:
            raise ConflictError(f"{spec.registered_name} has no champion to roll back from")
        info = self.registry.find_version(spec.registered_name, current)
        previous = info.tags.get("previous_champion") if info else None
        if not previous:
            raise ConflictError(
                f"{spec.registered_name} version {current} records no previous champion"
            )
        # The restored version keeps its own record of what it replaced.
        return self._make_champion(name, self._load(name, previous), current, False)

    def set_traffic(self, name: str, percent: float) -> TrafficState:
        with self._lock:
            return self._set_traffic(name, percent)

    def _set_traffic(self, name: str, percent: float) -> TrafficState:
        spec = self.store.spec(name)
        if percent > 0 and self.registry.alias_version(spec.registered_name, CHALLENGER) is None:
            raise ConflictError(
                f"{spec.registered_name} has no 'challenger' version to send traffic to"
            )
        shadow = self._applied.get(name, Split()).shadow_percent
        model = self._sync_challenger(name, percent, shadow)
        if percent > 0 and model is None:
            raise ConflictError(f"the challenger of {spec.registered_name} is the champion")
        self._store_split(name, percent)
        return self.traffic_state(name)

    def traffic_state(self, name: str) -> TrafficState:
        champion = self.store.loaded(name)
        challenger, percent = self.store.challenger(name)
        shadow, shadow_percent = self.store.shadows.get(name, (None, 0.0))
        serving = challenger or shadow
        return TrafficState(
            model=name,
            champion_version=champion.version if champion else None,
            challenger_version=serving.version if serving else None,
            challenger_percent=percent,
            shadow_percent=shadow_percent,
        )

    def versions(self, name: str) -> list[VersionSummary]:
        spec = self.store.spec(name)
        return [_version_summary(v) for v in self.registry.list_versions(spec.registered_name)]

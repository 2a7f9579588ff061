"""The MLOps loop, run by the service itself: triggers start retrain jobs, a live rollout (a
shadow judged on labelled pairs, a canary judged on each arm's labels, or a shadow then a
canary) promotes or rolls back, and every decision becomes an event with its reason.

Each model's automation is checked every ``automation_interval_s`` by whichever worker or
replica holds its lease (``automation:<model>`` in the database); the others skip it. What a
check needs to remember (the drift streak, the running canary) is stored in the database
too, so a new holder carries on where the last one stopped.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from prediction_service.data import file_sha256
from prediction_service.domain import EVENT_TYPES, AutomationState, CanaryState
from prediction_service.errors import ConflictError
from prediction_service.metrics import Metrics
from prediction_service.registry.store import CHALLENGER
from prediction_service.serving.comparison import ARM_METRIC, compare, compare_paired
from prediction_service.serving.monitoring import Monitor
from prediction_service.serving.predictions import PredictionService
from prediction_service.serving.retrain import RetrainRunner
from prediction_service.settings import Settings
from prediction_service.specs import AutomationSpec, ModelSpec, RolloutSpec, failed_thresholds
from prediction_service.storage.automation_state import StateStore
from prediction_service.storage.leases import LeaseStore

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """A span a person reads at a glance: 45 s, 12 min, 3.5 h, 7 days."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _epoch(iso: str | None) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso else 0.0


class Automation:
    def __init__(
        self,
        settings: Settings,
        retrain: RetrainRunner,
        monitor: Monitor,
        predictions: PredictionService,
        leases: LeaseStore,
        states: StateStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.retrain = retrain
        self.lifecycle = retrain.lifecycle
        self.store = retrain.lifecycle.store
        self.registry = retrain.lifecycle.registry
        self.events = retrain.lifecycle.events
        self.monitor = monitor
        self.log = monitor.log
        self.predictions = predictions
        self.leases = leases
        self.states = states
        self.metrics = metrics
        # The worker (as retrain jobs name it), and which core of it: tests run two in one.
        self.holder = f"{retrain.owner}:{secrets.token_hex(4)}"
        self._drift_checked: dict[str, float] = {}  # model -> monotonic time
        self._digests: dict[Path, tuple[int, int, str]] = {}  # path -> (mtime, size, sha256)
        for name in self.store.specs:
            # Every event series exists from the start at 0, so the first event of a type is
            # an increase (a series born at 1 is not) and dashboards annotate it.
            for kind in EVENT_TYPES:
                metrics.model_events.labels(name, kind)
            self._no_canary(name)

    def _no_canary(self, name: str) -> None:
        """The canary gauges between canaries (set at start and when one ends): inactive, no
        labels, no quality (NaN). A judged canary sets them at every check."""
        self.metrics.canary_active.labels(name).set(0)
        metric = ARM_METRIC[self.store.spec(name).task]
        for arm in ("challenger", "champion"):
            self.metrics.canary_labels.labels(name, arm).set(0)
            self.metrics.canary_live_quality.labels(name, arm, metric).set(math.nan)

    @property
    def models(self) -> list[str]:
        """The models whose spec has an ``automation`` block."""
        return [name for name, spec in self.store.specs.items() if spec.automation]

    def tick(self) -> None:
        """Check every automated model this process holds the lease of (taking free ones)."""
        for name in self.models:
            try:
                lease = f"automation:{name}"
                if self.leases.acquire(lease, self.holder, self.settings.automation_lease_s):
                    self.check(name)
            except Exception:  # noqa: BLE001 - one model's failure must not stop the others
                log.exception("automation of %s failed this round", name)

    def release(self) -> None:
        """At shutdown: hand the leases over now instead of when they expire."""
        for name in self.models:
            try:
                self.leases.release(f"automation:{name}", self.holder)
            except Exception as exc:  # noqa: BLE001 - they expire anyway
                log.warning("could not release the automation lease of %s: %s", name, exc)

    def check(self, name: str) -> None:
        spec = self.store.spec(name)
        policy = spec.automation
        assert policy is not None
        state = self.states.get(name)
        before = state.model_copy(deep=True)
        if policy.rollout.sequence:
            self._rollout(spec, policy.rollout, state)
        if state.canary is None and state.shadow is None:  # else it would replace the one
            # under test
            trigger = self._trigger(spec, policy, state)
            if trigger is not None:
                kind, reason = trigger
                try:
                    self.retrain.start(name, None, None, reason=reason, trigger=kind)
                except ConflictError as exc:  # a manual job started meanwhile
                    log.info("automation of %s: %s", name, exc)
        if state != before:
            self.states.put(name, state)

    # -- triggers --------------------------------------------------------------------
    def _trigger(
        self, spec: ModelSpec, policy: AutomationSpec, state: AutomationState
    ) -> tuple[str, str] | None:
        """(trigger type, reason) of the first trigger that fires, or None."""
        name, triggers = spec.name, policy.triggers
        # Drift is checked (and its streak kept) even while a job runs or the cooldown
        # holds, so "3 checks in a row" means consecutive checks, not consecutive chances.
        drifted = self._drift_streak(spec, state) if triggers.drift else []
        jobs = self.retrain.jobs.list(name, limit=1)
        last = jobs[0] if jobs else None
        if last and last.active:
            return None
        now = time.time()
        if last and policy.cooldown_s:
            ended = _epoch(last.finished_at or last.created_at)
            if now - ended < policy.cooldown_s:
                return None
        champion = self.store.loaded(name)
        if triggers.drift and state.drift_streak >= triggers.drift.consecutive_checks:
            streak = state.drift_streak
            state.drift_streak = 0
            return "drift", f"drift on {', '.join(drifted)} for {streak} checks in a row"
        if triggers.live_quality and champion is not None:
            need = triggers.live_quality.min_labels
            window = max(need, self.settings.quality_window)
            quality = self.monitor.update_quality(name, champion.version, window)
            if quality.window >= need:
                broken = failed_thresholds(spec.monitoring.live_quality, quality.metrics())
                if broken:
                    return "live_quality", (
                        f"live quality of version {champion.version} over its last "
                        f"{quality.window} labelled predictions: {'; '.join(broken)}"
                    )
        if triggers.new_data and champion is not None:
            path = spec.data_file(self.settings.home)
            digest = self._digest(path)
            trained_on = champion.info.run_tags.get("data_digest")
            if digest and trained_on and digest != trained_on:
                return "new_data", (
                    f"{spec.data.path} changed since version {champion.version} was trained "
                    f"(sha256 {trained_on[:12]} -> {digest[:12]})"
                )
        if triggers.schedule_s:
            trained = champion.info.created_at_ms / 1000.0 if champion else 0.0
            latest = max(trained, _epoch(last.created_at) if last else 0.0)
            if now - latest >= triggers.schedule_s:
                since = f"{duration(now - latest)} ago" if latest else "never"
                return "schedule", (
                    f"scheduled: every {duration(triggers.schedule_s)}, last training {since}"
                )
        return None

    def _drift_streak(self, spec: ModelSpec, state: AutomationState) -> list[str]:
        """Run a drift check when one is due; keep the count of drifted checks in a row.
        Returns the features that drifted in the latest check."""
        name = spec.name
        due = time.monotonic() - self._drift_checked.get(name, -1e18)
        if self.store.loaded(name) is None or due < self.settings.drift_interval_s:
            return list(state.drift_features)
        self._drift_checked[name] = time.monotonic()
        drifted = list(self.monitor.drift(name).drifted_features or [])
        state.drift_streak = state.drift_streak + 1 if drifted else 0
        state.drift_features = drifted
        return drifted

    def _digest(self, path: Path) -> str | None:
        """SHA-256 of a data file, read again only when its size or mtime changes."""
        try:
            stat = path.stat()
        except OSError:
            return None
        cached = self._digests.get(path)
        if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        digest = file_sha256(path)
        self._digests[path] = (stat.st_mtime_ns, stat.st_size, digest)
        return digest

    # -- the live rollout: shadow, canary ---------------------------------------------
    def _rollout(self, spec: ModelSpec, rollout: RolloutSpec, state: AutomationState) -> None:
        """Judge the stage under way, or start the next one the challenger is due."""
        name, registered = spec.name, spec.registered_name
        challenger = self.registry.alias_version(registered, CHALLENGER)
        champion = self.registry.champion_version(registered)
        for stage, running in (("shadow", state.shadow), ("canary", state.canary)):
            if running is None:
                continue
            if (challenger, champion) != (running.version, running.champion):
                # Someone else decided (an admin promoted, rolled back or retrained).
                log.info("%s of %s version %s ended outside the automation", stage, name,
                         running.version)  # fmt: skip
                self._stage_over(name, stage, state)
                return
            if stage == "shadow":
                self._judge_shadow(spec, rollout, running, state)
            else:
                self._judge(spec, rollout, running, state)
            return
        if challenger is None or champion is None or challenger == champion:
            return
        if self.retrain.jobs.active(name):  # its job has not recorded its end yet
            return
        info = self.registry.find_version(registered, challenger)
        if info is None or info.tags.get("gate_decision") not in rollout.sequence:
            return
        if "shadow" in rollout.sequence and not info.tags.get("shadow_decision"):
            self._start_shadow(spec, rollout, challenger, champion, state)
        elif (
            "canary" in rollout.sequence
            and not info.tags.get("canary_decision")
            and info.tags.get("shadow_decision", "passed") == "passed"
        ):
            self._start_canary(spec, rollout, challenger, champion, info.tags, state)

    def _stage_over(self, name: str, stage: str, state: AutomationState) -> None:
        if stage == "shadow":
            state.shadow = None
            self.monitor.no_shadow(name)
        else:
            state.canary = None
            self._no_canary(name)

    def _stage(self, challenger: str, champion: str) -> CanaryState:
        """A live stage starting now: judged on predictions logged after this point."""
        return CanaryState(
            version=challenger, champion=champion, started_at=time.time(),
            after_seq=self.log.last_seq(),
        )  # fmt: skip

    def _start_canary(
        self,
        spec: ModelSpec,
        rollout: RolloutSpec,
        challenger: str,
        champion: str,
        tags: dict[str, str],
        state: AutomationState,
        passed: str | None = None,
    ) -> None:
        name = spec.name
        self.lifecycle.set_traffic(name, rollout.canary_percent)
        state.canary = self._stage(challenger, champion)
        self.events.record(
            name,
            "canary_started",
            f"version {challenger} passed {passed or 'the quality gate'}; it now answers "
            f"{rollout.canary_percent:g}% of requests until {rollout.min_labels} labelled "
            f"predictions per arm decide (at most {duration(rollout.max_duration_s)})",
            challenger,
            {
                "champion": champion,
                "canary_percent": rollout.canary_percent,
                "gate_reason": tags.get("gate_reason"),
            },
        )

    # -- shadow ------------------------------------------------------------------------
    def _start_shadow(
        self,
        spec: ModelSpec,
        rollout: RolloutSpec,
        challenger: str,
        champion: str,
        state: AutomationState,
    ) -> None:
        state.shadow = self._stage(challenger, champion)
        then = " then a canary" if "canary" in rollout.sequence else ""
        self.lifecycle.set_shadow(
            spec.name,
            rollout.shadow_percent,
            f"version {challenger} passed the quality gate; it now predicts a copy of "
            f"{rollout.shadow_percent:g}% of requests, answered by the champion, until "
            f"{rollout.min_labels} labelled pairs decide (at most "
            f"{duration(rollout.max_duration_s)}){then}",
        )

    def _judge_shadow(
        self, spec: ModelSpec, rollout: RolloutSpec, shadow: CanaryState, state: AutomationState
    ) -> None:
        """The paired test, once the labelled pairs reach ``min_labels``; the agreement
        of the last hour's pairs, labelled or not, at every check."""
        name = spec.name
        pairs = self.log.pairs(name, shadow.version, shadow.after_seq)
        self.monitor.shadow_agreement(name, shadow.version, shadow.after_seq)
        labelled = [p for p in pairs if p[2] is not None]
        comparison = compare_paired(spec.task, labelled)
        self.metrics.shadow_active.labels(name).set(1)
        self.metrics.shadow_labels.labels(name).set(len(labelled))
        if comparison is not None:
            for arm, quality in (
                ("shadow", comparison.challenger),
                ("champion", comparison.champion),
            ):
                self.metrics.shadow_live_quality.labels(name, arm, comparison.metric).set(quality)
        need = rollout.min_labels
        details: dict[str, Any] = {"pairs": len(pairs), "labelled": len(labelled),
                                   "min_labels": need}  # fmt: skip
        outcome: str | None = None  # undecided
        if comparison is not None and len(labelled) >= need:
            details["test"] = comparison.details()
            worse = comparison.worse(rollout.confidence)
            verdict = "worse" if worse else "not worse"
            reason = (
                f"shadow: {comparison.sentence()}: {verdict} at {rollout.confidence:.0%} "
                "confidence"
            )
            if worse:
                outcome = "rolled_back"
            else:
                outcome = "passed" if "canary" in rollout.sequence else "promoted"
        elif time.time() - shadow.started_at > rollout.max_duration_s:
            outcome = "rolled_back"
            reason = (
                f"shadow undecided after {duration(rollout.max_duration_s)}: {len(labelled)} "
                f"labelled pairs of {need} needed"
            )
        if outcome is None:
            return
        self.lifecycle.conclude_shadow(name, shadow.version, outcome, reason, details)
        self._stage_over(name, "shadow", state)
        if outcome == "passed":
            info = self.registry.find_version(spec.registered_name, shadow.version)
            self._start_canary(
                spec, rollout, shadow.version, shadow.champion, info.tags if info else {},
                state, passed=f"its shadow ({reason})",
            )  # fmt: skip

    def _judge(
        self, spec: ModelSpec, rollout: RolloutSpec, canary: CanaryState, state: AutomationState
    ) -> None:
        name = spec.name
        arms = {"challenger": canary.version, "champion": canary.champion}
        rows = {arm: self.log.since(name, v, canary.after_seq) for arm, v in arms.items()}
        labelled = {arm: [(p, a) for p, a, _ in r if a is not None] for arm, r in rows.items()}
        comparison = compare(spec.task, labelled["challenger"], labelled["champion"])
        counts = {arm: len(pairs) for arm, pairs in labelled.items()}
        self.metrics.canary_active.labels(name).set(1)
        for arm in arms:
            self.metrics.canary_labels.labels(name, arm).set(counts[arm])
            if comparison is not None:
                quality = getattr(comparison, arm)  # Comparison.challenger / .champion
                self.metrics.canary_live_quality.labels(name, arm, comparison.metric).set(quality)
        broken = self._guardrail(name, rollout, arms, rows)
        need = rollout.min_labels
        details: dict[str, Any] = {"labels": counts, "min_labels": need}
        promote: bool | None = None  # undecided
        if broken:
            promote, reason = False, broken
        elif comparison is not None and min(counts.values()) >= need:
            details["test"] = comparison.details()
            worse = comparison.worse(rollout.confidence)
            promote = not worse
            verdict = "worse" if worse else "not worse"
            reason = f"{comparison.sentence()}: {verdict} at {rollout.confidence:.0%} confidence"
        elif time.time() - canary.started_at > rollout.max_duration_s:
            promote = False
            reason = (
                f"undecided after {duration(rollout.max_duration_s)}: {counts['challenger']} "
                f"labelled predictions for the challenger and {counts['champion']} for the "
                f"champion, {need} needed for each"
            )
        if promote is not None:
            self.lifecycle.conclude_canary(name, canary.version, promote, reason, details)
            self._stage_over(name, "canary", state)

    def _guardrail(
        self,
        name: str,
        rollout: RolloutSpec,
        arms: dict[str, str],
        rows: dict[str, list[tuple[Any, Any, float]]],
    ) -> str | None:
        """Why the challenger's arm breaks a guardrail, or None. Latency compares the arms'
        logged p99 since the canary began. The error rate is of the requests this process
        answered or failed: failures are not logged, so with several workers it is this
        worker's sample of the traffic (a denominator from the log, which every worker
        writes, made it several times too low)."""
        rails = rollout.guardrails
        answered, failed = self.predictions.requests(name, arms["challenger"])
        requests = answered + failed
        if requests >= rails.min_requests and failed / requests > rails.max_error_rate:
            return (
                f"challenger error rate {failed / requests:.1%} ({failed} failed of {requests} "
                f"requests) is above the guardrail's {rails.max_error_rate:.1%}"
            )
        if min(len(r) for r in rows.values()) < rails.min_requests:
            return None
        p99 = {arm: float(np.percentile([ms for *_, ms in r], 99)) for arm, r in rows.items()}
        limit = p99["champion"] * rails.max_p99_ratio + 1.0
        if p99["challenger"] > limit:
            return (
                f"challenger p99 latency {p99['challenger']:.2f} ms is above the guardrail of "
                f"{rails.max_p99_ratio:g}x the champion's {p99['champion']:.2f} ms + 1 ms"
            )
        return None

"""The quality gate: may a new version take the champion alias?"""

from __future__ import annotations

from dataclasses import dataclass

from prediction_service.specs import METRICS, GateSpec, failed_thresholds


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def decide(
    gate: GateSpec,
    metric: str,
    new_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
) -> GateDecision:
    """Both metric sets must come from the same test rows."""
    failures = failed_thresholds(gate.thresholds, new_metrics)
    if failures:
        return GateDecision(False, "below the spec's thresholds: " + "; ".join(failures))
    if champion_metrics is None:
        return GateDecision(True, "no champion yet")
    new, old = new_metrics[metric], champion_metrics[metric]
    greater_is_better = METRICS[metric][1]
    ok = new >= old - gate.tolerance if greater_is_better else new <= old + gate.tolerance
    relation = "at least as good as" if ok else "worse than"
    return GateDecision(
        ok,
        f"test {metric} {new:.4f} is {relation} the champion's {old:.4f} "
        f"on the same test split (tolerance {gate.tolerance})",
    )

"""How often the shadow's paired tests and the canary's unpaired tests decide wrongly, at the
same sample sizes, on simulated labels.

`python bench/shadow_simulation.py [--runs 2000]`. Both arms are versions of one model, so
their errors are correlated: each input has a difficulty both share (``--rho``), and each
version its own noise. A false rollback is a challenger as good as the champion judged worse;
a false promotion is a worse challenger judged not worse (one minus the test's power). The
tests are the service's own (serving/comparison.py), at 95% confidence; for regressors the
Wilcoxon signed-rank test (scipy) is measured beside the paired t-test the service uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prediction_service.serving.comparison import (  # noqa: E402
    abs_error_test,
    accuracy_test,
    mcnemar_test,
    paired_t_test,
)

CONFIDENCE = 0.95


def classification(rng: np.random.Generator, n: int, worse: float, rho: float) -> tuple[bool, bool]:
    """(paired says worse, unpaired says worse) for one simulated rollout: champion accuracy
    0.9, the challenger's ``worse`` lower."""
    shared = rng.random(n)
    own = np.where(rng.random(n) < rho, shared, rng.random(n))
    champion, challenger = shared >= 0.10, own >= 0.10 + worse
    paired = mcnemar_test(challenger.tolist(), champion.tolist()).worse(CONFIDENCE)
    # A canary's arms answer different requests: two independent samples of n.
    other = rng.random(n) >= 0.10 + worse
    unpaired = accuracy_test(other.tolist(), champion.tolist()).worse(CONFIDENCE)
    return paired, unpaired


def regression(
    rng: np.random.Generator, n: int, worse: float, rho: float
) -> tuple[bool, bool, bool]:
    """(paired t, Wilcoxon, Welch) says worse: errors with a shared per-input scale (skewed:
    some inputs are much harder), the challenger's ``worse`` times larger on average."""
    scale = rng.gamma(1.5, 0.4, n)
    champion = scale * rng.normal(0, 1, n)
    mixed = rho * champion / scale + np.sqrt(1 - rho**2) * rng.normal(0, 1, n)
    challenger = scale * mixed * (1 + worse)
    paired = paired_t_test(challenger, champion).worse(CONFIDENCE)
    d = np.abs(challenger) - np.abs(champion)
    wilcoxon = bool(stats.wilcoxon(d, alternative="greater").pvalue < 1 - CONFIDENCE)
    other = rng.gamma(1.5, 0.4, n) * rng.normal(0, 1, n) * (1 + worse)
    unpaired = abs_error_test(other, champion).worse(CONFIDENCE)
    return paired, wilcoxon, unpaired


def better_mae_worse_median(rng: np.random.Generator, n: int) -> tuple[bool, bool]:
    """(paired t, Wilcoxon) says worse, for a challenger with a lower MAE that is a little
    worse on most inputs and much better on the hard fifth: the decision is about MAE."""
    champion = np.abs(rng.normal(0, 0.5, n))
    hard = rng.random(n) < 0.2
    champion[hard] += 2.0
    challenger = np.where(hard, champion - 1.0, champion + 0.1)  # MAE 0.1*0.8 - 1.0*0.2 lower
    paired = paired_t_test(challenger, champion).worse(CONFIDENCE)
    d = np.abs(challenger) - np.abs(champion)
    wilcoxon = bool(stats.wilcoxon(d, alternative="greater").pvalue < 1 - CONFIDENCE)
    return paired, wilcoxon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated rollouts a cell")
    parser.add_argument("--rho", type=float, default=0.9, help="how much the arms' errors share")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    print(f"{args.runs} simulated rollouts a cell, arms' errors correlated (rho={args.rho}), "
          f"{CONFIDENCE:.0%} confidence\n")  # fmt: skip
    print("| task | labels (pairs, or per arm) | challenger | wrong decision | shadow (paired) "
          "| Wilcoxon | canary (unpaired) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in (100, 300, 1000):
        for worse, label, wrong in ((0.0, "as good", "false rollback"),
                                    (0.03, "3 points less accurate", "false promotion")):  # fmt: skip
            runs = np.array([classification(rng, n, worse, args.rho) for _ in range(args.runs)])
            rate = runs.mean(axis=0) if worse == 0 else 1 - runs.mean(axis=0)
            print(f"| classifier | {n} | {label} | {wrong} | {rate[0]:.1%} | - | {rate[1]:.1%} |")
        for worse, label, wrong in ((0.0, "as good", "false rollback"),
                                    (0.10, "10% larger MAE", "false promotion")):  # fmt: skip
            runs = np.array([regression(rng, n, worse, args.rho) for _ in range(args.runs)])
            rate = runs.mean(axis=0) if worse == 0 else 1 - runs.mean(axis=0)
            print(f"| regressor | {n} | {label} | {wrong} | {rate[0]:.1%} | {rate[1]:.1%} "
                  f"| {rate[2]:.1%} |")  # fmt: skip
        runs = np.array([better_mae_worse_median(rng, n) for _ in range(args.runs)])
        rate = runs.mean(axis=0)
        print(f"| regressor | {n} | lower MAE, worse median | false rollback | {rate[0]:.1%} "
              f"| {rate[1]:.1%} | - |")  # fmt: skip


if __name__ == "__main__":
    main()

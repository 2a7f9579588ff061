"""Is the challenger worse than the champion on live feedback? One-sided tests, no scipy.

A canary's two arms answer different requests: two independent samples.
Classifiers: a two-proportion z-test on accuracy (each labelled prediction is right or
wrong: a Bernoulli trial per arm, and with 100+ labels per arm the normal approximation of
the difference holds). Regressors: Welch's t-test on absolute errors (the arms' error spreads
differ, so no pooled variance; absolute errors are skewed, but their mean over 100+ labels is
close to normal).

A shadow predicts the same inputs as the champion: paired samples, where each input's
difficulty cancels out, so far fewer labels tell the same difference.
Classifiers: McNemar's exact test, on the discordant pairs only (one arm right, the other
wrong): if the challenger were no worse, each would be its miss with probability at most a
half, so the p-value is a binomial tail, exact at any count. Regressors: the paired t-test
on the difference of absolute errors, per input. Its mean is the difference of the arms'
MAE, the quantity the decision is about; the Wilcoxon signed-rank test asks whether the
differences' median is zero, which on skewed errors can disagree with the MAE (the
simulation in bench/shadow_simulation.py measures both).

Every test asks one question: "is the challenger worse?", and a rollout rolls back only when
the answer is yes at the spec's confidence. The p-values match ``scipy.stats`` (tests compare
them); they are computed here because importing scipy.stats in a background thread stalls
requests (see serving.monitoring.ks_pvalue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """The outcome of one test: the arms' quality, the statistic and the one-sided p-value
    that the challenger is worse."""

    metric: str  # ARM_METRIC of the task
    challenger: float
    champion: float
    n_challenger: int
    n_champion: int
    statistic: float
    p_value: float
    test: str
    # Paired tests: the discordant pairs (challenger wrong where the champion was right,
    # and the reverse), or the mean difference of absolute errors.
    discordant_worse: int | None = None
    discordant_better: int | None = None
    mean_difference: float | None = None

    def worse(self, confidence: float) -> bool:
        return self.p_value < 1.0 - confidence

    def sentence(self) -> str:
        if self.discordant_worse is not None:
            over = (
                f"over {self.n_challenger} labelled pairs ({self.discordant_worse} where only "
                f"the challenger erred, {self.discordant_better} where only the champion did)"
            )
        elif self.mean_difference is not None:
            over = (
                f"over {self.n_challenger} labelled pairs (absolute errors "
                f"{self.mean_difference:+.4g} on average)"
            )
        else:
            over = f"over {self.n_challenger} and {self.n_champion} labels"
        return (
            f"challenger {self.metric} {self.challenger:.4g} vs champion {self.champion:.4g} "
            f"{over}, p={self.p_value:.3g} ({self.test})"
        )

    def details(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def accuracy_test(challenger: list[bool], champion: list[bool]) -> Comparison:
    """Two-proportion z-test (pooled), one-sided: is the challenger's accuracy lower?"""
    n1, n2 = len(challenger), len(champion)
    p1, p2 = sum(challenger) / n1, sum(champion) / n2
    pooled = (sum(challenger) + sum(champion)) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:  # both arms all right or all wrong: no evidence either way
        z, p = 0.0, 1.0 if p1 >= p2 else 0.0
    else:
        z = (p1 - p2) / se
        p = 1.0 - normal_sf(z)  # P(Z < z): small when the challenger is clearly lower
    test = "two-proportion z-test, one-sided"
    return Comparison(ARM_METRIC["classification"], p1, p2, n1, n2, z, p, test)


def abs_error_test(challenger: np.ndarray, champion: np.ndarray) -> Comparison:
    """Welch's t-test on absolute errors, one-sided: are the challenger's larger?"""
    a, b = np.abs(np.asarray(challenger, float)), np.abs(np.asarray(champion, float))
    n1, n2 = len(a), len(b)
    m1, m2 = float(a.mean()), float(b.mean())
    v1, v2 = float(a.var(ddof=1)) / n1, float(b.var(ddof=1)) / n2
    if v1 + v2 == 0.0:
        t, p = 0.0, 1.0 if m1 <= m2 else 0.0
    else:
        t = (m1 - m2) / math.sqrt(v1 + v2)
        df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
        p = t_sf(t, df)
    test = "Welch's t-test on absolute errors, one-sided"
    return Comparison(ARM_METRIC["regression"], m1, m2, n1, n2, t, p, test)


# What a canary compares, by task: the metric each test reports.
ARM_METRIC = {"classification": "accuracy", "regression": "mae"}


def compare(
    task: str, challenger: list[tuple[Any, Any]], champion: list[tuple[Any, Any]]
) -> Comparison | None:
    """The task's test on each arm's (prediction, actual) pairs; None below two a side."""
    if len(challenger) < 2 or len(champion) < 2:
        return None
    if task == "classification":
        return accuracy_test([p == a for p, a in challenger], [p == a for p, a in champion])
    return abs_error_test(
        np.array([float(p) - float(a) for p, a in challenger]),
        np.array([float(p) - float(a) for p, a in champion]),
    )


def mcnemar_test(challenger_right: list[bool], champion_right: list[bool]) -> Comparison:
    """McNemar's exact test, one-sided, on paired right/wrong: is the challenger worse?

    Of the ``n`` discordant pairs, ``worse`` are the challenger's misses; with no difference
    each discordant pair is either's miss with probability 1/2, so the p-value is
    P(X >= worse) for X ~ Binomial(n, 1/2) = I_{1/2}(worse, n - worse + 1)."""
    worse = sum(1 for s, c in zip(challenger_right, champion_right) if c and not s)
    better = sum(1 for s, c in zip(challenger_right, champion_right) if s and not c)
    n = worse + better
    p = 1.0 if worse == 0 else betainc(worse, n - worse + 1, 0.5)
    pairs = len(challenger_right)
    return Comparison(
        ARM_METRIC["classification"],
        sum(challenger_right) / pairs,
        sum(champion_right) / pairs,
        pairs,
        pairs,
        float(worse - better),
        p,
        "McNemar's exact test on discordant pairs, one-sided",
        discordant_worse=worse,
        discordant_better=better,
    )


def paired_t_test(challenger_errors: np.ndarray, champion_errors: np.ndarray) -> Comparison:
    """The paired t-test, one-sided, on each input's difference of absolute errors: are the
    challenger's larger on average?"""
    a = np.abs(np.asarray(challenger_errors, float))
    b = np.abs(np.asarray(champion_errors, float))
    d = a - b
    n = len(d)
    mean, var = float(d.mean()), float(d.var(ddof=1)) / n
    if var == 0.0:
        t, p = 0.0, 1.0 if mean <= 0 else 0.0
    else:
        t = mean / math.sqrt(var)
        p = t_sf(t, n - 1)
    return Comparison(
        ARM_METRIC["regression"],
        float(a.mean()),
        float(b.mean()),
        n,
        n,
        t,
        p,
        "paired t-test on absolute errors, one-sided",
        mean_difference=mean,
    )


def compare_paired(task: str, pairs: list[tuple[Any, Any, Any]]) -> Comparison | None:
    """The task's paired test on (champion's prediction, challenger's, actual) triples;
    None below two pairs."""
    if len(pairs) < 2:
        return None
    if task == "classification":
        return mcnemar_test([s == a for _, s, a in pairs], [c == a for c, _, a in pairs])
    return paired_t_test(
        np.array([float(s) - float(a) for _, s, a in pairs]),
        np.array([float(c) - float(a) for c, _, a in pairs]),
    )

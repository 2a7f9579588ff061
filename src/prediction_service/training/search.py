"""Cross-validation of one candidate's settings, and the hyperparameter search built on it.

The search (a candidate's ``search`` block in its spec) sees the training split only and
scores each trial with the spec's own folds, so its best trial's score is the candidate's CV
score, comparable with every other candidate's. Optuna's TPE sampler, seeded with the split
seed, proposes the settings: the de facto standard for this, maintained, and reproducible
with a seed (the same spec and data give the same trials).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prediction_service.specs import CandidateSpec, SearchDimension
from prediction_service.training.build import build_estimator
from prediction_service.training.metrics import score

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Folds:
    """The training split and how it is cut: what every CV of one training shares."""

    X: np.ndarray
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    task: str
    metric: str
    greater_is_better: bool
    seed: int
    derive: list[list[float]] | None = None  # the spec's derived features (build_estimator)


def cross_validate(
    folds: Folds,
    estimator: str,
    params: dict[str, Any],
    on_fold: Callable[[int, float, float], None],
) -> list[float]:
    """The metric on each fold; ``on_fold(k, score, seconds)`` after each."""
    scores = []
    for k, (fit, val) in enumerate(folds.splits, 1):
        started = time.perf_counter()
        model = build_estimator(estimator, params, folds.seed, folds.derive)
        model.fit(folds.X[fit], folds.y[fit])
        scores.append(score(folds.task, model, folds.X[val], folds.y[val])[folds.metric])
        on_fold(k, scores[-1], time.perf_counter() - started)
    return scores


@dataclass(frozen=True)
class Trial:
    number: int
    params: dict[str, Any]
    cv_mean: float
    fold_scores: list[float]
    seconds: float


def search(
    cand: CandidateSpec, folds: Folds, progress: Progress, label: str
) -> tuple[Trial, list[Trial]]:
    """Run the candidate's search; the best trial (its full params) and every trial."""
    import optuna

    assert cand.search is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if folds.greater_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=folds.seed),
    )
    trials: list[Trial] = []
    budget = cand.search.trials

    def objective(trial: Any) -> float:
        started = time.perf_counter()
        params = {**cand.params}
        for name, dim in cand.search.space.items():  # type: ignore[union-attr]
            params[name] = _suggest(trial, name, dim)
        scores = cross_validate(folds, cand.estimator, params, lambda *_: None)
        done = Trial(
            trial.number, params, float(np.mean(scores)), scores, time.perf_counter() - started
        )
        trials.append(done)
        best = (max if folds.greater_is_better else min)(t.cv_mean for t in trials)
        tried = ", ".join(f"{k}={_short(params[k])}" for k in cand.search.space)  # type: ignore[union-attr]
        progress(
            f"{label} trial {len(trials)}/{budget}: cv {folds.metric} {done.cv_mean:.4f} "
            f"(best {best:.4f}) in {done.seconds:.1f}s [{tried}]"
        )
        return done.cv_mean

    study.optimize(objective, n_trials=budget)
    best = next(t for t in trials if t.number == study.best_trial.number)
    return best, trials


def _suggest(trial: Any, name: str, dim: SearchDimension) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(name, dim.choices)
    assert dim.low is not None and dim.high is not None
    if dim.type == "int":
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, log=dim.log)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

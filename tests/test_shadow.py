"""Shadow rollouts in one process: the shadow's rows and their pairs, feedback labelling
both, drops instead of an unbounded queue, the paired tests against scipy, and the
automation taking a new version through a shadow (alone, or before a canary).

Small models (``small`` in conftest), a real MLflow store and a real SQLite log.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from prediction_service.errors import SpecError
from prediction_service.serving.comparison import compare_paired, mcnemar_test, paired_t_test
from prediction_service.settings import Settings
from prediction_service.specs import load_spec
from prediction_service.training.pipeline import TrainingResult
from tests import test_automation
from tests.conftest import IRIS_RECORD
from tests.test_automation import events, spec_with, wait_for_job

automated = test_automation.automated  # the fixture: a core over the small models

Small = tuple[Settings, dict[str, TrainingResult]]
IRIS = np.array([list(IRIS_RECORD.values())])


# -- the paired tests, against scipy ------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_matches_scipy_s_exact_binomial_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    champion = rng.random(400) < 0.9
    challenger = np.where(rng.random(400) < 0.08, ~champion, champion)
    got = mcnemar_test(challenger.tolist(), champion.tolist())
    worse, better = got.discordant_worse, got.discordant_better
    assert worse is not None and better is not None
    assert worse == int(np.sum(champion & ~challenger))
    expected = stats.binomtest(worse, worse + better, 0.5, alternative="greater").pvalue
    assert got.p_value == pytest.approx(expected, rel=1e-9)


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(5))
def test_the_paired_t_test_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    champion = rng.gamma(2.0, 0.3, 300) * rng.choice([-1, 1], 300)  # skewed errors
    challenger = champion * (1 + rng.normal(0.02 * seed, 0.1, 300))
    got = paired_t_test(challenger, champion)
    expected = stats.ttest_rel(np.abs(challenger), np.abs(champion), alternative="greater")
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert got.statistic == pytest.approx(expected.statistic, rel=1e-9)


@pytest.mark.unit
def test_paired_comparisons_say_what_they_counted() -> None:
    pairs = [("a", "a", "a")] * 50 + [("a", "b", "a")] * 9 + [("b", "a", "a")] * 1
    comparison = compare_paired("classification", pairs)
    assert comparison is not None and comparison.worse(0.95)
    assert (comparison.discordant_worse, comparison.discordant_better) == (9, 1)
    assert "9 where only the challenger erred, 1 where only the champion did" in (
        comparison.sentence()
    )
    values = [(1.0, 1.5, 1.0)] * 20 + [(2.0, 2.0, 1.9)] * 20
    regression = compare_paired("regression", values)
    assert regression is not None and regression.mean_difference == pytest.approx(0.25)
    assert compare_paired("regression", values[:1]) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rollout", "error"),
    [
        ({"mode": "shadow", "stages": ["shadow"]}, "give mode or stages, not both"),
        ({"stages": ["canary", "shadow"]}, "stages: [shadow], [canary] or [shadow, canary]"),
        ({"mode": "shadow", "shadow_percent": 0}, "greater than 0"),
    ],
)
def test_rollout_stages_are_checked(tmp_path: Path, rollout: dict, error: str) -> None:
    with pytest.raises(SpecError, match=error.replace("[", r"\[").replace("]", r"\]")):
        load_spec(spec_with(tmp_path, {"rollout": rollout}))


@pytest.mark.unit
def test_stages_read_in_order(tmp_path: Path) -> None:
    staged = load_spec(spec_with(tmp_path, {"rollout": {"stages": ["shadow", "canary"]}}))
    assert staged.automation is not None
    assert staged.automation.rollout.sequence == ("shadow", "canary")
    shadow = load_spec(spec_with(tmp_path, {"rollout": {"mode": "shadow"}}))
    assert shadow.automation is not None and shadow.automation.rollout.sequence == ("shadow",)


# -- the shadow's rows, off the answer's path ---------------------------------------------
SCHEDULED_SHADOW = {
    "triggers": {"schedule_s": 0.5},
    "cooldown_s": 600,
    "rollout": {"mode": "shadow", "min_labels": 30, "max_duration_s": 600},
}


def start_shadow(core: Any) -> tuple[str, str]:
    """A retrain by the schedule, then its shadow: (champion, shadow) versions."""
    champion = core.store.loaded("iris").version
    core.automation.check("iris")
    assert wait_for_job(core).status == "succeeded"
    core.automation.check("iris")  # the gate passed: the shadow starts
    shadow, percent = core.store.shadows["iris"]
    assert percent == 100 and shadow.version != champion
    return champion, shadow.version


def logged(core: Any) -> list[Any]:
    assert core.prediction_log.flush()
    items, _ = core.prediction_log.history("iris", 1000, None)
    return list(items)


@pytest.mark.parametrize("automated", [SCHEDULED_SHADOW], indirect=True)
@pytest.mark.integration
def test_the_shadow_predicts_copies_that_pair_with_the_answers(automated: Any) -> None:
    core = automated
    champion, shadow = start_shadow(core)
    started = events(core)[0]
    assert started.type == "shadow_started" and started.version == shadow
    assert "predicts a copy of 100% of requests, answered by the champion" in started.reason
    answers = [core.predictions.predict("iris", IRIS, "native") for _ in range(5)]
    assert {p.version for p in answers} == {champion}  # the champion answers every one
    core.predictions.shadows.close()  # predicts what is queued
    rows = logged(core)
    shadows = [r for r in rows if r.arm == "shadow"]
    assert len(shadows) == 5 and {r.version for r in shadows} == {shadow}
    assert {r.pair_id for r in shadows} == {p.ids[0] for p in answers}
    # Feedback on the answer labels its pair too.
    core.monitor.record_feedback(answers[0].ids[0], "setosa")
    pair = next(r for r in logged(core) if r.pair_id == answers[0].ids[0])
    assert pair.actual == "setosa"
    assert core.metrics.shadow_predictions.labels("iris", shadow)._value.get() == 5
    agreement = core.monitor.shadow_agreement("iris", shadow)
    assert agreement.pairs == 5 and agreement.agreement == 1.0  # both say setosa
    # Not the rows drift and training on feedback read: those are the answers' alone.
    assert len(core.prediction_log.recent("iris", 1000)) == 5


@pytest.mark.parametrize("automated", [SCHEDULED_SHADOW], indirect=True)
@pytest.mark.integration
def test_a_shadow_that_falls_behind_drops_and_counts_rather_than_queue(automated: Any) -> None:
    core = automated
    _, shadow = start_shadow(core)
    runner = core.predictions.shadows
    runner.close()  # the shadow's thread stops: nothing is taken off the queue
    runner.max_rows = 3
    for _ in range(5):
        assert core.predictions.predict("iris", IRIS, "native").values == ["setosa"]
    assert runner.queued_rows == 3
    assert core.metrics.shadow_dropped.labels("iris")._value.get() == 2


# -- the automation decides on the paired test ---------------------------------------------
def judge_with_feedback(core: Any, right: Any, rounds: int = 200) -> None:
    """Predict iris rows and send ground truth (``right(truth, champion, shadow)``) until the
    automation decides."""
    rng = np.random.default_rng(3)
    from prediction_service.data import load_dataset

    data = load_dataset(core.specs["iris"], core.specs["iris"].data_file(core.settings.home))
    for _ in range(rounds):
        i = int(rng.integers(len(data.y)))
        X = core.predictions.codec("iris").matrix([data.X.iloc[i].tolist()])
        p = core.predictions.predict("iris", X, "native")
        core.predictions.shadows.close()  # its pair is written now (and starts again)
        core.predictions.shadows.start()
        core.monitor.record_feedback(p.ids[0], right(data.y.iloc[i], p.values[0]))
        if _ % 10 == 9:
            core.automation.check("iris")
            if core.automation.states.get("iris").shadow is None:
                return
    raise AssertionError("the shadow was not decided")


@pytest.mark.parametrize("automated", [SCHEDULED_SHADOW], indirect=True)
@pytest.mark.integration
def test_a_shadow_no_worse_on_labelled_pairs_is_promoted(automated: Any) -> None:
    core = automated
    champion, shadow = start_shadow(core)
    judge_with_feedback(core, lambda truth, _answer: truth)
    promoted = events(core)[0]
    assert promoted.type == "promoted" and promoted.version == shadow
    assert promoted.reason.startswith("shadow: challenger accuracy")
    assert "McNemar's exact test on discordant pairs, one-sided" in promoted.reason
    assert "not worse at 95% confidence" in promoted.reason
    test = promoted.details["test"]
    assert test["n_challenger"] >= 30 and "discordant_worse" in test
    assert core.store.loaded("iris").version == shadow
    assert "iris" not in core.store.shadows
    registered = core.specs["iris"].registered_name
    assert core.registry.find_version(registered, shadow).tags["shadow_decision"] == "promoted"


@pytest.mark.parametrize("automated", [SCHEDULED_SHADOW], indirect=True)
@pytest.mark.integration
def test_a_shadow_worse_on_labelled_pairs_is_rolled_back(automated: Any) -> None:
    """Ground truth that agrees with the champion where the two differ: the shadow's
    discordant pairs are its misses."""
    core = automated
    champion, shadow = start_shadow(core)
    # The retrained version predicts as the champion does (same data, same seed): give the
    # shadow one that names the next class instead, so it errs wherever the champion is right.
    challenger, percent = core.store.shadows["iris"]
    worse = dataclasses.replace(
        challenger, predict=lambda X: np.roll(challenger.predict(X), 1, axis=1)
    )
    core.store.set_shadow("iris", worse, percent)
    for _ in range(40):
        p = core.predictions.predict("iris", IRIS, "native")
        core.predictions.shadows.close()
        core.predictions.shadows.start()
        core.monitor.record_feedback(p.ids[0], p.values[0])  # the champion was right
    core.automation.check("iris")
    rolled_back = events(core)[0]
    assert rolled_back.type == "rolled_back" and rolled_back.version == shadow
    assert "worse at 95% confidence" in rolled_back.reason
    assert "not worse" not in rolled_back.reason
    assert rolled_back.details["test"]["discordant_better"] == 0
    assert rolled_back.details["test"]["discordant_worse"] >= 30
    assert core.store.loaded("iris").version == champion and "iris" not in core.store.shadows
    registered = core.specs["iris"].registered_name
    assert core.registry.alias_version(registered, "challenger") is None


SHADOW_THEN_CANARY = {
    "triggers": {"schedule_s": 0.5},
    "cooldown_s": 600,
    "rollout": {"stages": ["shadow", "canary"], "min_labels": 30, "canary_percent": 20},
}


@pytest.mark.parametrize("automated", [SHADOW_THEN_CANARY], indirect=True)
@pytest.mark.integration
def test_a_shadow_that_passes_goes_on_to_the_canary(automated: Any) -> None:
    core = automated
    _, shadow = start_shadow(core)
    judge_with_feedback(core, lambda truth, _answer: truth)
    kinds = [e.type for e in events(core)][:2]
    assert kinds == ["canary_started", "shadow_started"]
    canary = events(core)[0]
    assert canary.reason.startswith(f"version {shadow} passed its shadow (shadow: challenger")
    challenger, percent = core.store.challenger("iris")
    assert challenger is not None and challenger.version == shadow and percent == 20
    assert core.automation.states.get("iris").canary is not None
    registered = core.specs["iris"].registered_name
    assert core.registry.find_version(registered, shadow).tags["shadow_decision"] == "passed"


@pytest.mark.parametrize("automated", [SCHEDULED_SHADOW], indirect=True)
@pytest.mark.integration
def test_an_admin_shadows_and_stops_the_registered_challenger(automated: Any) -> None:
    core = automated
    champion = core.store.loaded("iris").version
    core.automation.check("iris")
    assert wait_for_job(core).status == "succeeded"
    state = core.lifecycle.set_shadow("iris", 25)
    assert state.shadow_percent == 25 and state.challenger_percent == 0
    assert events(core)[0].reason.startswith("an admin copies 25% of requests to version")
    stopped = core.lifecycle.set_shadow("iris", 0)
    assert stopped.shadow_percent == 0 and "iris" not in core.store.shadows
    assert core.store.loaded("iris").version == champion

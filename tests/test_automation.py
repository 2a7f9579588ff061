"""The automation's parts on real stores: spec validation, the statistical tests, leases on
SQLite and PostgreSQL, one active job per model, and each trigger fired by real traffic."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from sqlalchemy.exc import IntegrityError

from prediction_service.domain import ModelEvent, RetrainJob
from prediction_service.errors import ConflictError, SpecError
from prediction_service.serving.comparison import abs_error_test, accuracy_test, t_sf
from prediction_service.settings import Settings
from prediction_service.specs import load_spec
from prediction_service.storage.db import make_engine, migrate
from prediction_service.storage.events import EventStore
from prediction_service.storage.leases import LeaseStore
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import ROOT, registry_copy, small_settings, write_small_specs

Small = tuple[Settings, dict[str, TrainingResult]]
IRIS = pd.read_csv(ROOT / "data" / "iris_raw.csv")
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def write_automated_specs(folder: Path, model: str, automation: dict[str, Any]) -> Path:
    """The small specs, with ``automation`` on ``model`` and its data in ``folder`` (so a test
    may change the file)."""
    write_small_specs(folder)
    path = folder / f"{model}.yaml"
    raw = yaml.safe_load(path.read_text())
    data = folder / Path(raw["data"]["path"]).name
    shutil.copy(raw["data"]["path"], data)
    raw["data"]["path"] = str(data)
    raw["automation"] = automation
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


# -- the spec ----------------------------------------------------------------------------
def spec_with(tmp_path: Path, automation: Any) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "models" / "iris.yaml").read_text())
    raw["automation"] = automation
    path = tmp_path / "iris.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.unit
def test_the_issue_s_automation_block_is_a_valid_spec(tmp_path: Path) -> None:
    block = {
        "triggers": {
            "schedule_s": 604800,
            "drift": {"consecutive_checks": 3},
            "live_quality": {"min_labels": 200},
            "new_data": True,
        },
        "cooldown_s": 3600,
        "training_data": {"include_feedback": True},
        "rollout": {
            "mode": "canary",
            "canary_percent": 10,
            "min_labels": 100,
            "max_duration_s": 86400,
        },
    }
    spec = load_spec(spec_with(tmp_path, block))
    assert spec.automation is not None
    assert spec.automation.triggers.drift and spec.automation.triggers.drift.consecutive_checks == 3
    assert spec.automation.rollout.mode == "canary"
    assert spec.automation.rollout.canary_percent == 10
    assert spec.automation.training_data.include_feedback
    assert load_spec(ROOT / "config" / "models" / "iris.yaml").automation is None


@pytest.mark.parametrize(
    ("block", "field", "words"),
    [
        (
            {"rollout": {"mode": "blue"}},
            "automation.rollout.mode",
            "'direct', 'canary' or 'shadow'",
        ),
        ({"rollout": {"canary_percent": 100}}, "automation.rollout.canary_percent", "less than"),
        ({"triggers": {"schedule": 10}}, "automation.triggers.schedule", "not permitted"),
        ({"triggers": {"drift": {"consecutive_checks": 0}}}, "consecutive_checks", "greater"),
        ({"cooldown_s": -1}, "automation.cooldown_s", "greater than or equal"),
        ("weekly", "automation", "valid dictionary"),
    ],
)
@pytest.mark.unit
def test_automation_errors_name_the_field(
    tmp_path: Path, block: Any, field: str, words: str
) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(spec_with(tmp_path, block))
    assert field in str(err.value) and words in str(err.value), str(err.value)


@pytest.mark.unit
def test_a_live_quality_trigger_needs_a_live_quality_bound(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "models" / "iris.yaml").read_text())
    raw["automation"] = {"triggers": {"live_quality": {"min_labels": 50}}}
    raw.pop("monitoring")
    path = tmp_path / "iris.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="automation.triggers.live_quality.*monitoring"):
        load_spec(path)


# -- the tests a canary is judged by -------------------------------------------------------
@pytest.mark.unit
def test_welch_matches_scipy_on_skewed_errors() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        a = rng.exponential(rng.uniform(0.2, 2.0), rng.integers(3, 500))
        b = rng.exponential(rng.uniform(0.2, 2.0), rng.integers(3, 500))
        ours = abs_error_test(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-9)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)
    for df in (1.0, 2.5, 30.0, 1e4):
        for t in (-4.0, -0.5, 0.0, 0.7, 9.0):
            assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-15)


@pytest.mark.unit
def test_two_proportion_test_against_its_formula() -> None:
    # 88/100 right against 95/100: pooled p = 0.915, z = -0.07 / sqrt(p (1 - p) 0.02).
    challenger = [True] * 88 + [False] * 12
    champion = [True] * 95 + [False] * 5
    result = accuracy_test(challenger, champion)
    pooled = 183 / 200
    z = (0.88 - 0.95) / np.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(stats.norm.cdf(z))
    assert result.worse(0.95) and not result.worse(0.99)  # p = 0.036
    assert accuracy_test([True] * 50, [True] * 50).p_value == 1.0  # nothing to tell apart
    better = accuracy_test([True] * 99 + [False], champion)
    assert better.p_value > 0.5 and not better.worse(0.95)


# -- leases ------------------------------------------------------------------------------
def check_leases(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    leases = LeaseStore(engine)
    assert leases.acquire("automation:iris", "a", 60)
    assert not leases.acquire("automation:iris", "b", 60)
    assert leases.acquire("automation:iris", "a", 60)  # renewal
    assert leases.holder("automation:iris") == "a"
    assert leases.acquire("automation:housing", "b", 60)  # one lease per name
    # A holder that stops renewing (a dead worker) is replaced once its lease expires.
    assert leases.acquire("automation:short", "a", 0.2)
    assert not leases.acquire("automation:short", "b", 60)
    time.sleep(0.3)
    assert leases.acquire("automation:short", "b", 60)
    assert not leases.acquire("automation:short", "a", 60)
    leases.release("automation:iris", "a")
    assert leases.acquire("automation:iris", "b", 60)
    # Many contenders at once: exactly one wins.
    won: list[str] = []
    barrier = threading.Barrier(8)

    def contend(holder: str) -> None:
        barrier.wait()
        if LeaseStore(engine).acquire("automation:race", holder, 60):
            won.append(holder)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1, won
    engine.dispose()


@pytest.mark.unit
def test_leases_on_sqlite(tmp_path: Path) -> None:
    check_leases(f"sqlite:///{tmp_path / 'leases.db'}")


@pytest.mark.integration
def test_leases_on_postgresql(postgres_url: str) -> None:
    check_leases(postgres_url)


# -- the automation in one process, over a copy of the small registry ---------------------
@pytest.fixture
def automated(small: Small, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Core over the small models with ``request.param`` as iris's automation block."""
    from prediction_service.core import build_core

    specs = write_automated_specs(tmp_path / "specs", "iris", request.param)
    settings = small_settings(
        small,
        tmp_path,
        specs_dir=specs,
        tracking_uri=registry_copy(small, tmp_path),
        reload_interval_s=3600,
        automation_interval_s=3600,  # the tests call check() themselves
        drift_interval_s=0.001,
        drift_min_rows=20,
        drift_window=40,
    )
    core = build_core(settings)
    core.start()
    yield core
    core.close()


@contextlib.contextmanager
def another_worker(core: Any) -> Iterator[Any]:
    """A second core over ``core``'s database and registry, as a second worker is."""
    from prediction_service.core import build_core

    other = build_core(core.settings)
    other.start()
    try:
        yield other
    finally:
        other.close()


def predict_iris(core: Any, rows: np.ndarray) -> list[str]:
    return list(core.predictions.predict("iris", rows, "native").ids)


def events(core: Any, model: str = "iris") -> list[ModelEvent]:
    return list(core.lifecycle.events.list(model))


def wait_for_job(core: Any, model: str = "iris", timeout_s: float = 120) -> RetrainJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = core.retrain.jobs.list(model, limit=1)[0]
        if job.status not in ("queued", "running"):
            time.sleep(0.2)  # the runner records the event right after the status
            return job
        time.sleep(0.2)
    raise TimeoutError("retrain job did not finish")


DRIFT = {"triggers": {"drift": {"consecutive_checks": 3}}, "cooldown_s": 600}


@pytest.mark.parametrize("automated", [DRIFT], indirect=True)
@pytest.mark.integration
def test_drift_on_three_checks_in_a_row_triggers_a_retrain_then_cooldown_holds(
    automated: Any,
) -> None:
    core = automated
    shifted = IRIS.iloc[:, :4].to_numpy()[::4].copy()  # 38 rows of all three classes
    shifted[:, 2] = 6.9  # petal length of the largest virginica, on every row
    predict_iris(core, shifted)
    assert core.prediction_log.flush()
    core.automation.check("iris")
    core.automation.check("iris")
    assert core.retrain.jobs.list("iris") == []  # two checks in a row are not enough
    core.automation.check("iris")
    [triggered] = events(core)
    assert triggered.type == "retrain_triggered"
    assert triggered.reason == "drift on petal_length for 3 checks in a row"
    assert triggered.details["trigger"] == "drift"
    job = wait_for_job(core)
    assert job.status == "succeeded", job
    # Without a canary (rollout: direct), the gate's promotion is the last decision.
    promoted, succeeded, _ = events(core)
    assert (promoted.type, succeeded.type) == ("promoted", "retrain_succeeded")
    assert promoted.reason.startswith("the quality gate: test accuracy")
    assert promoted.version == succeeded.version == job.version
    assert core.store.loaded("iris").version == job.version  # served at once
    # The traffic still drifts, and three more checks pass, but the cooldown holds.
    for _ in range(4):
        core.automation.check("iris")
    assert len(core.retrain.jobs.list("iris")) == 1
    assert core.automation.states.get("iris").drift_streak >= 3


QUALITY = {"triggers": {"live_quality": {"min_labels": 30}}, "cooldown_s": 600}


@pytest.mark.parametrize("automated", [QUALITY], indirect=True)
@pytest.mark.integration
def test_live_quality_below_the_spec_s_bound_triggers_a_retrain(automated: Any) -> None:
    core = automated
    rows = IRIS.iloc[:, :4].to_numpy()[::5]  # 30 rows of all three classes
    served = core.predictions.predict("iris", rows, "native")
    assert core.prediction_log.flush()
    for n, (prediction_id, predicted) in enumerate(zip(served.ids, served.values)):
        # One answer in three is confirmed, two come back wrong: live accuracy a third.
        wrong = IRIS_CLASSES[(IRIS_CLASSES.index(predicted) + 1) % 3]
        core.monitor.record_feedback(prediction_id, predicted if n % 3 == 0 else wrong)
        if n == 20:  # too few labels yet: the trigger waits for min_labels
            core.automation.check("iris")
            assert core.retrain.jobs.list("iris") == []
    core.automation.check("iris")
    [triggered] = events(core)
    assert triggered.details["trigger"] == "live_quality"
    assert "over its last 30 labelled predictions: accuracy 0.3333 < required 0.85" in (
        triggered.reason
    )
    assert wait_for_job(core).status == "succeeded"


NEW_DATA = {"triggers": {"new_data": True}, "cooldown_s": 0}


@pytest.mark.parametrize("automated", [NEW_DATA], indirect=True)
@pytest.mark.integration
def test_a_changed_data_file_triggers_a_retrain(automated: Any) -> None:
    core = automated
    core.automation.check("iris")
    assert core.retrain.jobs.list("iris") == []  # the champion was trained on this file
    data = core.specs["iris"].data_file(core.settings.home)
    with data.open("a") as fh:
        fh.write("5.0,3.4,1.5,0.2,0\n")
    core.automation.check("iris")
    [triggered] = events(core)
    assert triggered.details["trigger"] == "new_data"
    assert f"{data} changed since version" in triggered.reason
    assert wait_for_job(core).status == "succeeded"


@pytest.mark.parametrize("automated", [{"triggers": {"schedule_s": 0.5}}], indirect=True)
@pytest.mark.integration
def test_two_workers_never_start_two_retrains(automated: Any, tmp_path: Path) -> None:
    """Two cores over one database (as two workers are): both tick at once, repeatedly; the
    lease lets one act, and the database's unique index refuses a second active job even
    to a direct start that bypasses the lease."""
    first = automated
    with another_worker(first) as second:
        try:
            barrier = threading.Barrier(2)

            def tick(core: Any) -> None:
                for _ in range(5):
                    barrier.wait()
                    core.automation.tick()

            threads = [threading.Thread(target=tick, args=(c,)) for c in (first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            jobs = first.retrain.jobs.list("iris")
            assert len(jobs) == 1, jobs
            assert [e.type for e in events(first)] == ["retrain_triggered"]
            assert "scheduled: every 0.5 s, last training" in events(first)[0].reason
            # The other core, asked directly while the job runs, is refused; and had it not
            # seen the job (a race), the database's unique index refuses a second active one.
            with pytest.raises(ConflictError, match="already running"):
                second.retrain.start("iris", None, None)
            with pytest.raises(IntegrityError):
                second.retrain.jobs.create("f" * 32, "iris", None, None)
        finally:
            wait_for_job(first)


@pytest.mark.unit
def test_events_are_listed_newest_first_and_filtered(tmp_path: Path) -> None:
    from prediction_service.metrics import Metrics

    engine = make_engine(f"sqlite:///{tmp_path / 'events.db'}")
    migrate(engine)
    store = EventStore(engine, Metrics())
    store.add("iris", "retrain_triggered", "scheduled", None, {"job_id": "j1"})
    store.add("iris", "retrain_succeeded", "version 2 passed", "2")
    store.add("housing", "promoted", "by an admin", "5")
    got = store.list("iris")
    assert [e.type for e in got] == ["retrain_succeeded", "retrain_triggered"]
    assert got[1].details == {"job_id": "j1"} and got[0].version == "2"
    assert [e.type for e in store.list("iris", types=["retrain_triggered"])] == [
        "retrain_triggered"
    ]
    with pytest.raises(ValueError, match="unknown event type"):
        store.add("iris", "exploded", "no")
    engine.dispose()


# -- training on feedback ----------------------------------------------------------------
@pytest.mark.parametrize(
    "automated", [{"training_data": {"include_feedback": True}}], indirect=True
)
@pytest.mark.integration
def test_include_feedback_trains_on_labelled_rows_and_records_the_lineage(
    automated: Any,
) -> None:
    from prediction_service.registry.store import FEEDBACK_LINEAGE_FILE, TEST_SPLIT_FILE
    from prediction_service.training.pipeline import TrainOptions, run_training

    core = automated
    # Every row of the CSV comes back from production with its label; those equal to a row
    # of the test split must not train (they would leak it).
    rows = IRIS.iloc[:, :4].to_numpy()
    served = core.predictions.predict("iris", rows, "native")
    unlabelled = core.predictions.predict("iris", rows[:5], "native")
    assert core.prediction_log.flush()
    truth = [IRIS_CLASSES[t] for t in IRIS["target"].to_numpy()]
    for prediction_id, actual in zip(served.ids, truth):
        core.monitor.record_feedback(prediction_id, actual)
    spec = core.specs["iris"]
    registry = core.registry
    champion = registry.version_info(spec.registered_name, "1")
    test_ids = registry.load_run_json(champion.run_id, TEST_SPLIT_FILE)["test_row_ids"]
    test_rows = {tuple(rows[i]) for i in test_ids}
    kept = [pid for pid, row in zip(served.ids, rows.tolist()) if tuple(row) not in test_rows]
    assert 100 < len(kept) <= 120
    quiet = lambda _m: None  # noqa: E731
    with_feedback = run_training(spec, core.settings, progress=quiet)
    csv_only = run_training(spec, core.settings, TrainOptions(include_feedback=False), quiet)
    n_recent = len(kept) // 5  # the newest 20% are held out
    assert with_feedback.feedback_rows == len(kept) - n_recent and csv_only.feedback_rows == 0
    info = registry.version_info(spec.registered_name, with_feedback.version)
    plain = registry.version_info(spec.registered_name, csv_only.version)
    lineage = registry.load_run_json(info.run_id, FEEDBACK_LINEAGE_FILE)
    assert lineage["training"] == kept[:-n_recent]  # oldest first
    assert lineage["recent_holdout"] == kept[-n_recent:]
    assert not set(unlabelled.ids) & set(lineage["training"] + lineage["recent_holdout"])
    tags, plain_tags = info.run_tags, plain.run_tags
    assert tags["feedback_rows"] == str(len(kept) - n_recent) and plain_tags["feedback_rows"] == "0"
    # The same CSV and the same test rows (the gate compares like with like); different
    # training rows, and a metric on the newest labelled rows.
    assert tags["data_digest"] == plain_tags["data_digest"]
    assert tags["test_split_digest"] == plain_tags["test_split_digest"]
    assert tags["training_data_digest"] != plain_tags["training_data_digest"]
    assert 0.0 <= info.evaluation_metrics["recent_accuracy"] <= 1.0
    assert "recent_accuracy" not in plain.evaluation_metrics
    assert 0.0 <= float(tags["champion_recent_accuracy"]) <= 1.0


@pytest.mark.integration
def test_feedback_rows_are_validated_like_the_csv(small: Small, tmp_path: Path) -> None:
    """A labelled row the spec no longer admits (its range narrowed since) stops training
    with the row count and the reason, as a bad CSV row does."""
    from prediction_service.core import build_core
    from prediction_service.errors import DataValidationError
    from prediction_service.training.feedback import load_feedback

    core = build_core(small_settings(small, tmp_path))
    core.start()
    try:
        ids = core.predictions.predict("iris", IRIS.iloc[:3, :4].to_numpy(), "native").ids
        assert core.prediction_log.flush()
        for prediction_id in ids:
            core.monitor.record_feedback(prediction_id, "setosa")
        spec = core.specs["iris"]
        url = core.settings.effective_database_url
        assert len(load_feedback(spec, url)) == 3
        narrowed = spec.model_copy(
            update={"features": [spec.features[0].model_copy(update={"max": 5.0}),
                                 *spec.features[1:]]}  # fmt: skip
        )
        with pytest.raises(DataValidationError, match="1 rows outside the valid range"):
            load_feedback(narrowed, url)
    finally:
        core.close()
    assert len(load_feedback(spec, f"sqlite:///{tmp_path / 'none.db'}")) == 0


# -- canary limits -----------------------------------------------------------------------
UNDECIDED = {
    "triggers": {"schedule_s": 0.5},
    "cooldown_s": 600,
    "rollout": {"mode": "canary", "canary_percent": 30, "min_labels": 50, "max_duration_s": 1},
}


def eventually(read: Callable[[], Any], expected: Any, timeout_s: float = 10.0) -> Any:
    """What ``read()`` returns: ``expected`` as soon as it does, else after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def served(core: Any, model: str = "iris") -> tuple[str, str | None, float]:
    """The champion version ``core`` serves, and its challenger's version and share."""
    challenger, percent = core.store.challenger(model)
    version = challenger.version if challenger else None
    return core.store.loaded(model).version, version, percent


@pytest.mark.parametrize("automated", [UNDECIDED], indirect=True)
@pytest.mark.integration
def test_a_canary_undecided_by_max_duration_is_rolled_back(automated: Any) -> None:
    """Also on a second worker over the same database, which follows the split both ways
    within its traffic interval (1 s), long before its registry poll (an hour here)."""
    core = automated
    champion = core.store.loaded("iris").version
    core.automation.check("iris")  # the schedule: a retrain
    assert wait_for_job(core).status == "succeeded"
    with another_worker(core) as other:
        assert served(other) == (champion, None, 0.0)
        core.automation.check("iris")  # the gate passed: the canary starts
        assert events(core)[0].type == "canary_started"
        challenger, percent = core.store.challenger("iris")
        assert challenger is not None and percent == 30
        canary = (champion, challenger.version, 30)
        assert eventually(lambda: served(other), canary) == canary
        time.sleep(1.1)
        core.automation.check("iris")
        assert eventually(lambda: served(other), (champion, None, 0.0)) == (champion, None, 0.0)
    rolled_back = events(core)[0]
    assert rolled_back.type == "rolled_back"
    assert rolled_back.reason == (
        "undecided after 1 s: 0 labelled predictions for the challenger and 0 for the "
        "champion, 50 needed for each"
    )
    assert core.store.challenger("iris") == (None, 0.0)
    assert core.store.loaded("iris").version == champion
    registered = core.specs["iris"].registered_name
    assert core.registry.alias_version(registered, "challenger") is None
    tags = core.registry.find_version(registered, challenger.version).tags
    assert tags["canary_decision"] == "rolled_back" and tags["canary_reason"].startswith(
        "undecided"
    )
    core.automation.check("iris")  # a decided version is not canaried again
    assert events(core)[0].type == "rolled_back"
    assert core.automation.states.get("iris").canary is None


@pytest.mark.parametrize("automated", [UNDECIDED], indirect=True)
@pytest.mark.integration
def test_another_worker_follows_promotions_and_rollbacks_within_a_second(automated: Any) -> None:
    """An admin's promotion and rollback on one worker reach a second worker over the same
    database within its traffic interval (1 s), long before its registry poll (an hour)."""
    core = automated
    first = core.store.loaded("iris").version
    core.automation.check("iris")  # the schedule: a retrain, whose gate names a challenger
    assert wait_for_job(core).status == "succeeded"
    second = core.registry.alias_version(core.specs["iris"].registered_name, "challenger")
    assert second is not None and second != first
    with another_worker(core) as other:
        assert served(other) == (first, None, 0.0)
        core.lifecycle.promote("iris", second)
        assert eventually(lambda: served(other), (second, None, 0.0)) == (second, None, 0.0)
        core.lifecycle.rollback("iris")
        assert eventually(lambda: served(other), (first, None, 0.0)) == (first, None, 0.0)


@pytest.mark.parametrize("automated", [UNDECIDED], indirect=True)
@pytest.mark.integration
def test_guardrails_on_the_challenger_s_errors_and_latency(automated: Any) -> None:
    core = automated
    rollout = core.specs["iris"].automation.rollout  # 1% errors, 3x p99 + 1 ms, 200 requests
    arms = {"challenger": "9", "champion": "1"}
    fast = [("setosa", None, 0.2)] * 300
    ok = core.automation._guardrail("iris", rollout, arms, {"challenger": fast, "champion": fast})
    assert ok is None
    slow = [("setosa", None, 5.0)] * 300
    too_few = {"challenger": slow[:150], "champion": fast}  # a p99 of 150 is near the max
    assert core.automation._guardrail("iris", rollout, arms, too_few) is None
    broken = core.automation._guardrail(
        "iris", rollout, arms, {"challenger": slow, "champion": fast}
    )
    assert broken == (
        "challenger p99 latency 5.00 ms is above the guardrail of 3x the champion's 0.20 ms + 1 ms"
    )
    # The error rate is of this process's requests: 6 failed of 306 is 2.0%, whatever the
    # log (which every worker writes) holds.
    counts = {("iris", "9"): (300, 6)}
    core.predictions.requests = lambda name, version: counts[(name, version)]
    broken = core.automation._guardrail(
        "iris", rollout, arms, {"challenger": fast * 3, "champion": fast}
    )
    assert broken is not None and broken.startswith("challenger error rate 2.0% (6 failed of 306")
    counts[("iris", "9")] = (300, 2)  # 0.7%: under the 1% guardrail
    ok = core.automation._guardrail("iris", rollout, arms, {"challenger": fast, "champion": fast})
    assert ok is None


@pytest.mark.unit
def test_requests_are_counted_per_version(core: Any) -> None:
    """What the error-rate guardrail reads: each served version's requests in this process,
    answered and failed (a model that raises)."""
    champion = core.store.loaded("iris")
    rows = IRIS.iloc[:, :4].to_numpy(dtype=float)
    for i in range(3):
        core.predictions.predict("iris", rows[i : i + 2], "native")
    assert core.predictions.requests("iris", champion.version) == (3, 0)
    with pytest.raises(Exception):
        core.predictions.predict("iris", np.ones((1, 7)), "native")  # the wrong width
    assert core.predictions.requests("iris", champion.version) == (3, 1)
    assert core.predictions.requests("iris", "no such version") == (0, 0)

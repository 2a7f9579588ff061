"""The prediction log, jobs and traffic splits on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, inspect, select

from prediction_service.domain import TrainingOutcome
from prediction_service.metrics import Metrics
from prediction_service.storage.db import PredictionRecord, make_engine, migrate
from prediction_service.storage.jobs import JobStore
from prediction_service.storage.prediction_log import LogBatch, PredictionLog
from prediction_service.storage.traffic import Split, TrafficStore


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    eng = make_engine(url)
    migrate(eng)
    yield eng
    with eng.begin() as conn:  # the PostgreSQL database is shared by the session's tests
        for table in ("predictions", "retrain_jobs", "traffic_splits"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    eng.dispose()


def rows(ids: range | list[int], model: str = "iris", version: str = "1") -> LogBatch:
    """A request's worth of predictions, one per id; iris rows carry probabilities."""
    iris = model == "iris"
    return LogBatch(
        model=model,
        version=version,
        created_at=time.time(),
        request_id=None,
        latency_ms=0.1,
        feature_names=("a",),
        ids=[f"{i:032x}" for i in ids],
        features=np.array([[float(i)] for i in ids]),
        predictions=[0] * len(ids) if iris else [float(i) for i in ids],
        probabilities=np.array([[0.9, 0.1] for _ in ids]) if iris else None,
        classes=("setosa", "versicolor") if iris else None,
    )


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(PredictionRecord)).scalar_one())


def test_migrations_are_idempotent(engine: Engine) -> None:
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"predictions", "retrain_jobs", "traffic_splits", "alembic_version"} <= tables


def test_every_queued_row_is_written_by_close(engine: Engine) -> None:
    metrics = Metrics()
    log = PredictionLog(engine, metrics, batch_size=100, flush_interval_s=0.05)
    log.start()
    for start in range(0, 1234, 100):  # requests of up to 100 rows
        log.record(rows(range(start, min(start + 100, 1234))))
    log.close()
    assert count(engine) == 1234
    assert metrics.log_written._value.get() == 1234
    stored = log.find(f"{150:032x}")  # a row from the middle of a 100-row request
    assert stored is not None and stored.features == {"a": 150.0}
    assert stored.prediction == "setosa"
    assert stored.probabilities == {"setosa": 0.9, "versicolor": 0.1}


def test_history_is_newest_first_with_a_cursor(engine: Engine) -> None:
    log = PredictionLog(engine, Metrics())
    log.start()
    for i in range(10):
        log.record(rows([i], model="iris" if i % 2 else "housing"))
    log.close()
    page, cursor = log.history("iris", limit=3, before=None)
    assert [p.id for p in page] == [f"{i:032x}" for i in (9, 7, 5)]
    rest, end = log.history("iris", limit=3, before=cursor)
    assert [p.id for p in rest] == [f"{i:032x}" for i in (3, 1)] and end is None
    assert page[0].created_at.endswith("+00:00")


def test_created_at_is_stored_to_the_microsecond(engine: Engine) -> None:
    log = PredictionLog(engine, Metrics())
    log.start()
    when = [1_700_000_000.25, 1_700_000_000.999999, 1_700_000_001.0, time.time()]
    for i, t in enumerate(when):
        log.record(rows([i])._replace(created_at=t))
    log.close()
    page, _ = log.history(None, limit=10, before=None)
    stored = [datetime.fromisoformat(p.created_at).timestamp() for p in reversed(page)]
    assert stored == pytest.approx(when, abs=1.5e-6)


def test_ground_truth_is_stored_once(engine: Engine) -> None:
    log = PredictionLog(engine, Metrics())
    log.start()
    log.record(rows([1]))
    log.record(rows([2], model="housing", version="4"))
    assert log.flush()
    assert log.set_actual(f"{1:032x}", "setosa") is True
    assert log.set_actual(f"{1:032x}", "virginica") is False
    assert log.set_actual(f"{2:032x}", 2.5) is True
    stored = log.find(f"{1:032x}")
    assert stored is not None and stored.actual == "setosa"
    assert stored.features == {"a": 1.0}
    assert stored.probabilities == {"setosa": 0.9, "versicolor": 0.1}
    assert log.recent_feedback("iris", "1", 10) == [("setosa", "setosa")]
    assert log.recent_feedback("housing", "4", 10) == [(2.0, 2.5)]
    assert log.recent("housing", 5) == [({"a": 2.0}, 2.0)]
    log.close()


@pytest.mark.unit
def test_write_failures_are_counted_not_raised(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the database's folder should be")
    engine = make_engine(f"sqlite:///{tmp_path / 'blocker' / 'log.db'}")
    metrics = Metrics()
    log = PredictionLog(engine, metrics, batch_size=10)
    log.start()
    log.record(rows(range(25)))
    log.close()
    assert metrics.log_write_failures.labels("database")._value.get() == 25
    assert metrics.log_written._value.get() == 0
    status = log.status()  # said, not only counted
    assert not status.writable and status.failing_for_s is not None and status.last_error
    assert metrics.log_failing._value.get() == 1


@pytest.mark.unit
def test_a_removed_database_file_is_made_again_before_the_next_write(tmp_path: Path) -> None:
    """``rm -rf logs/`` under a running service: the rows after it go to a new file with the
    schema, where readers find them; none goes to the removed file."""
    folder = tmp_path / "logs"
    engine = make_engine(f"sqlite:///{folder / 'log.db'}")
    migrate(engine)
    metrics = Metrics()
    log = PredictionLog(engine, metrics, batch_size=1000, flush_interval_s=0.05)
    log.start()
    log.record(rows(range(10)))
    assert log.flush() and count(engine) == 10
    shutil.rmtree(folder)
    log.record(rows(range(10, 30)))
    assert log.flush()
    log.close()
    assert count(engine) == 20  # the rows after the removal, in the new file
    assert metrics.log_file_recreated._value.get() == 1
    assert metrics.log_written._value.get() == 30 and log.status().writable
    assert log.find(f"{29:032x}") is not None


def test_a_row_the_database_refuses_costs_only_that_row(engine: Engine) -> None:
    """A batch insert that fails on one row is retried row by row: the others are written."""
    metrics = Metrics()
    log = PredictionLog(engine, metrics, batch_size=1000, flush_interval_s=0.5)
    log.start()
    first = rows([7])
    log.record(first)
    assert log.flush()
    # id 7 again, at the same time (a retried insert): the unique constraint refuses that
    # row only (on PostgreSQL's partitioned table the constraint is on (id, created_at)).
    log.record(rows(range(20))._replace(created_at=first.created_at))
    assert log.flush()
    log.close()
    assert metrics.log_write_failures.labels("row")._value.get() == 1
    assert metrics.log_written._value.get() == 20
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM predictions").scalar_one() == 20


def test_a_poisoned_request_id_costs_only_its_own_row(engine: Engine) -> None:
    """The report: on PostgreSQL a 300-character request id failed the multi-row insert and
    38 other predictions were lost. Now the insert is retried row by row."""
    metrics = Metrics()
    log = PredictionLog(engine, metrics, batch_size=1000, flush_interval_s=1.0)
    log.start()
    for i in range(38):
        log.record(rows([i]))
    log.record(rows([99])._replace(request_id="x" * 300))  # too long for VARCHAR(128)
    assert log.flush()
    log.close()
    with engine.connect() as conn:
        logged = conn.exec_driver_sql("SELECT COUNT(*) FROM predictions").scalar_one()
    lost = metrics.log_write_failures.labels("row")._value.get()
    if engine.dialect.name == "postgresql":
        assert (logged, lost) == (38, 1)
    else:  # SQLite does not enforce VARCHAR lengths: nothing to lose
        assert (logged, lost) == (39, 0)


def test_the_queue_is_bounded(engine: Engine) -> None:
    metrics = Metrics()
    # The writer is not started, so nothing makes room: after the wait, rows are dropped.
    log = PredictionLog(engine, metrics, max_queue=10, full_wait_s=0.05)
    log.record(rows(range(8)))
    started = time.monotonic()
    log.record(rows(range(8, 11)))  # would make 11: waits, then dropped whole
    assert time.monotonic() - started >= 0.05
    log.record(rows([99, 100]))
    assert log.queue_depth == 10
    assert metrics.log_dropped._value.get() == 3


def test_a_full_queue_slows_requests_down_and_loses_nothing(engine: Engine) -> None:
    """Rows arriving faster than the writer takes them wait for room instead of being lost."""
    metrics = Metrics()
    log = PredictionLog(engine, metrics, max_queue=10, batch_size=4, flush_interval_s=0.01)
    log.start()
    for start in range(0, 600, 3):
        log.record(rows(range(start, start + 3)))  # 200 requests of 3 rows into a 10-row queue
    log.close()
    with engine.connect() as conn:
        logged = conn.exec_driver_sql("SELECT COUNT(*) FROM predictions").scalar_one()
    assert (logged, metrics.log_dropped._value.get()) == (600, 0)
    assert metrics.log_backpressure._value.get() > 0  # requests did wait


def test_jobs_and_traffic(engine: Engine) -> None:
    jobs = JobStore(engine)
    job = jobs.create("a" * 32, "iris", ["knn"], None)
    assert job.status == "queued" and job.candidates == ["knn"]
    assert jobs.active("iris").id == "a" * 32  # type: ignore[union-attr]
    jobs.mark_running("a" * 32)
    jobs.create("b" * 32, "housing", None, "data/x.csv")
    outcome = TrainingOutcome(
        model="housing", registered_name="H", version="3", promoted=True, rollout=False,
        reason="gate", feedback_rows=0, chosen="lightgbm", run_id="r", seconds=1.0,
        metrics={"test_rmse": 0.4},
    )  # fmt: skip
    jobs.record_outcome("b" * 32, outcome, None)
    assert jobs.finish("b" * 32, "succeeded", None, unless="")
    assert jobs.unfinished()[0][0] == "a" * 32
    assert jobs.fail_interrupted("stopped", []) == 0
    assert jobs.fail_interrupted("stopped", ["a" * 32, "b" * 32]) == 1  # b had ended
    assert jobs.get("a" * 32).status == "failed"  # type: ignore[union-attr]
    assert jobs.active("iris") is None
    assert [j.id for j in jobs.list()] == ["b" * 32, "a" * 32]
    assert jobs.get("b" * 32).metrics == {"test_rmse": 0.4}  # type: ignore[union-attr]

    traffic = TrafficStore(engine)
    traffic.set("iris", 10)
    traffic.set("iris", 25)
    traffic.set("housing", 0)
    assert traffic.all() == {"iris": Split(25.0, None), "housing": Split(0.0, None)}
    # Each champion change gets its own token, with or without a split stored before.
    first, second = traffic.champion_moved("iris"), traffic.champion_moved("iris")
    assert first != second
    automl = traffic.champion_moved("automl")
    traffic.set("automl", 5)
    assert traffic.all() == {
        "iris": Split(25.0, second), "housing": Split(0.0, None), "automl": Split(5.0, automl)
    }  # fmt: skip


def test_only_the_jobs_of_workers_that_are_gone_are_interrupted(engine: Engine) -> None:
    """A starting (or restarted) worker must not fail the jobs another live worker runs."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from prediction_service.serving.retrain import HEARTBEAT_S, _gone

    here = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    now = time.time()
    assert _gone(None, None, now)  # written by an older service: nobody watches it
    assert _gone(f"{here}:{dead}", now, now)  # its process exited (a crash, a restart)
    assert not _gone(f"{here}:{os.getpid()}", now, now)  # alive, beating
    assert not _gone("elsewhere:1", now - 2 * HEARTBEAT_S, now)  # another host, recent beat
    assert _gone("elsewhere:1", now - 4 * HEARTBEAT_S, now)  # three beats missed

    jobs = JobStore(engine)
    jobs.create("c" * 32, "iris", None, None, owner="elsewhere:1")
    before = jobs.unfinished()[0][2]
    time.sleep(0.01)
    jobs.heartbeat("someone-else:2")
    assert jobs.unfinished()[0][2] == before  # only the owner's jobs are renewed
    jobs.heartbeat("elsewhere:1")
    assert jobs.unfinished()[0][2] > before

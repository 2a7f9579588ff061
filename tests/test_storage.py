"""The prediction log, jobs and traffic splits on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, inspect, select

from prediction_service.metrics import Metrics
from prediction_service.storage.db import PredictionRecord, make_engine, migrate
from prediction_service.storage.jobs import JobStore, TrafficStore
from prediction_service.storage.prediction_log import PredictionLog


@pytest.fixture(params=["sqlite", "postgresql"])
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


def row(i: int, model: str = "iris", version: str = "1") -> dict[str, Any]:
    return {
        "id": f"{i:032x}",
        "created_at": datetime.now(UTC),
        "model": model,
        "version": version,
        "features": {"a": float(i)},
        "prediction": "setosa" if model == "iris" else float(i),
        "probabilities": {"setosa": 0.9} if model == "iris" else None,
        "latency_ms": 0.1,
        "request_id": None,
        "status": "ok",
    }


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
    log.record_many([row(i) for i in range(1234)])
    log.close()
    assert count(engine) == 1234
    assert metrics.log_written._value.get() == 1234


def test_history_is_newest_first_with_a_cursor(engine: Engine) -> None:
    log = PredictionLog(engine, Metrics())
    log.start()
    log.record_many([row(i, model="iris" if i % 2 else "housing") for i in range(10)])
    log.close()
    page, cursor = log.history("iris", limit=3, before=None)
    assert [p["id"] for p in page] == [f"{i:032x}" for i in (9, 7, 5)]
    rest, end = log.history("iris", limit=3, before=cursor)
    assert [p["id"] for p in rest] == [f"{i:032x}" for i in (3, 1)] and end is None
    assert page[0]["created_at"].endswith("+00:00")


def test_ground_truth_is_stored_once(engine: Engine) -> None:
    log = PredictionLog(engine, Metrics())
    log.start()
    log.record_many([row(1), row(2, model="housing", version="4")])
    assert log.flush()
    assert log.set_actual(f"{1:032x}", "setosa") is True
    assert log.set_actual(f"{1:032x}", "virginica") is False
    assert log.set_actual(f"{2:032x}", 2.5) is True
    assert log.find(f"{1:032x}")["actual"] == "setosa"  # type: ignore[index]
    assert log.recent_feedback("iris", "1", 10) == [("setosa", "setosa")]
    assert log.recent_feedback("housing", "4", 10) == [(2.0, 2.5)]
    assert log.recent("housing", 5) == [({"a": 2.0}, 2.0)]
    log.close()


def test_write_failures_are_counted_not_raised(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated: no table
    metrics = Metrics()
    log = PredictionLog(engine, metrics, batch_size=10)
    log.start()
    log.record_many([row(i) for i in range(25)])
    log.close()
    assert metrics.log_write_failures._value.get() == 25
    assert metrics.log_written._value.get() == 0


def test_the_queue_is_bounded(engine: Engine) -> None:
    metrics = Metrics()
    log = PredictionLog(engine, metrics, max_queue=10)  # writer not started: nothing drains
    log.record_many([row(i) for i in range(25)])
    log.record(row(99))
    assert log.queue_depth == 10
    assert metrics.log_dropped._value.get() == 16


def test_jobs_and_traffic(engine: Engine) -> None:
    jobs = JobStore(engine)
    job = jobs.create("a" * 32, "iris", ["knn"], None)
    assert job["status"] == "queued" and job["candidates"] == ["knn"]
    assert jobs.active("iris")["id"] == "a" * 32  # type: ignore[index]
    jobs.update("a" * 32, status="running")
    jobs.create("b" * 32, "housing", None, "data/x.csv")
    jobs.update(
        "b" * 32, status="succeeded", version="3", promoted=True, metrics={"test_rmse": 0.4}
    )
    assert jobs.fail_interrupted("stopped") == 1
    assert jobs.get("a" * 32)["status"] == "failed"  # type: ignore[index]
    assert jobs.active("iris") is None
    assert [j["id"] for j in jobs.list()] == ["b" * 32, "a" * 32]
    assert jobs.get("b" * 32)["metrics"] == {"test_rmse": 0.4}  # type: ignore[index]

    traffic = TrafficStore(engine)
    traffic.set("iris", 10)
    traffic.set("iris", 25)
    traffic.set("housing", 0)
    assert traffic.all() == {"iris": 25.0, "housing": 0.0}

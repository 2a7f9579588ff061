"""The prediction log's lifecycle on PostgreSQL: the table partitioned by day (converted by
a migration, every row kept), whole days archived and dropped, per-model retention
falling back to batches of rows where a day cannot be dropped."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert, select, text

from prediction_service.core import Core, build_core
from prediction_service.storage import partitions
from prediction_service.storage.db import PredictionRecord, make_engine, migrate
from tests.conftest import HOUSING_RECORD, small_settings
from tests.test_archive import NOW, Small, archived_table, live_ids, serve_a_month

pytestmark = pytest.mark.integration


def test_the_migration_partitions_an_existing_table_keeping_every_row(
    fresh_postgres_url: str,
) -> None:
    engine = make_engine(fresh_postgres_url)
    migrate(engine, to="0008")
    rows = [
        dict(id=f"{i:032x}", created_at=NOW - timedelta(days=i % 20, minutes=i), model="iris",
             version="1", features={"x": float(i)}, prediction="setosa", latency_ms=0.1,
             status="ok")
        for i in range(5_000)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(PredictionRecord), rows)
        before = conn.execute(text("SELECT seq, id, features FROM predictions ORDER BY seq")).all()
    assert migrate(engine)[0] == "0008"
    with engine.begin() as conn:
        assert partitions.is_partitioned(conn)
        assert len(partitions.day_partitions(conn)) >= 20
        after = conn.execute(text("SELECT seq, id, features FROM predictions ORDER BY seq")).all()
        assert after == before
        conn.execute(insert(PredictionRecord).values(**{**rows[0], "id": "f" * 32}))
        assert conn.execute(text("SELECT max(seq) FROM predictions")).scalar() == 5_001
        assert conn.execute(text("SELECT count(*) FROM predictions_default")).scalar() == 0
    engine.dispose()


@pytest.fixture
def core(small: Small, tmp_path: Path, fresh_postgres_url: str) -> Iterator[Core]:
    """iris kept 7 days (its spec), housing kept forever (no deployment retention)."""
    specs = tmp_path / "specs"
    shutil.copytree(small[0].specs_path, specs)
    iris = yaml.safe_load((specs / "iris.yaml").read_text())
    iris.setdefault("serving", {})["log_retention"] = "7d"
    (specs / "iris.yaml").write_text(yaml.safe_dump(iris))
    settings = small_settings(small, tmp_path, database_url=fresh_postgres_url, specs_dir=specs,
                              reload_interval_s=3600, log_retention_interval_s=3600,
                              log_archive_batch_rows=7)  # fmt: skip
    built = build_core(settings)
    built.start()
    with built.engine.begin() as conn:  # a month of day partitions, as a month of running makes
        partitions.ensure(conn, [NOW.date() - timedelta(days=k) for k in range(32)])
    yield built
    built.close()


def test_whole_days_past_retention_are_archived_and_dropped(core: Core) -> None:
    ids = serve_a_month(core, per_day=10)
    moved = core.retention.run(NOW)
    assert moved["iris"] == 230
    with core.engine.connect() as conn:
        days = partitions.day_partitions(conn)
        assert min(days) == (NOW - timedelta(days=7)).date()  # days before the cutoff: dropped
        assert conn.execute(text("SELECT count(*) FROM predictions_default")).scalar() == 0
    table = archived_table(core).to_table()
    archived = table["id"].to_pylist()
    assert len(archived) == len(set(archived)) == 230
    assert set(archived) | live_ids(core) == set(ids) and len(live_ids(core)) == 70
    text_metrics = core.metrics.exposition()[0].decode()
    assert 'prediction_log_deleted_rows_total{model="iris"} 230.0' in text_metrics
    assert core.retention.run(NOW)["iris"] == 0


def test_a_model_kept_longer_keeps_its_days_and_the_other_leaves_by_rows(
    core: Core,
) -> None:
    """housing is kept: days holding its rows stay; iris's rows there leave row by row."""
    ids = serve_a_month(core, per_day=4, days=10)
    X = core.predictions.codec("housing").record(HOUSING_RECORD)
    housing = core.predictions.predict("housing", X, "native").ids[0]
    assert core.prediction_log.flush()
    with core.engine.begin() as conn:
        conn.execute(
            PredictionRecord.__table__.update()
            .where(PredictionRecord.id == housing)
            .values(created_at=NOW - timedelta(days=9, hours=-2))
        )
    moved = core.retention.run(NOW)
    assert moved["iris"] == 12  # days 1-3 of 10: day 1 holds housing's row
    with core.engine.connect() as conn:
        days = partitions.day_partitions(conn)
        assert (NOW - timedelta(days=9)).date() in days  # housing's day stays
        assert (NOW - timedelta(days=8)).date() not in days  # iris alone: dropped
        left = set(conn.execute(select(PredictionRecord.id)).scalars())
    assert housing in left and len(left) == 29
    archived = archived_table(core).to_table()["id"].to_pylist()
    assert len(archived) == len(set(archived)) == 12 and set(archived) | left == {*ids, housing}

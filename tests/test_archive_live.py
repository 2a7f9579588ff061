"""A server (two workers) across a simulated month with 7 days' retention: a month of
predictions back-dated in its SQLite file, archived while it serves, killed half-way
through archiving and restarted. In the end the live table holds the last 7 days, the
archive the rest, each prediction exactly once, and feedback for an archived one is 410."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.conftest import IRIS_RECORD, small_settings
from tests.live import LiveServer
from tests.test_archive import Small

pytestmark = pytest.mark.live
DAYS, PER_DAY, KEEP_DAYS = 30, 200, 7
# Day k is back-dated by DAYS - k days and an hour: days 0-23 are past 7 days, 24-29 not.
LIVE = (KEEP_DAYS - 1) * PER_DAY


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_a_month_of_predictions_leaves_the_last_seven_days_live(
    small: Small, tmp_path: Path
) -> None:
    settings = small_settings(small, tmp_path)
    db = Path(settings.effective_database_url.removeprefix("sqlite:///"))
    env = {"PREDICT_LOG_RETENTION": f"{KEEP_DAYS}d", "PREDICT_LOG_ARCHIVE_BATCH_ROWS": "20"}
    server = LiveServer(settings, tmp_path / "first.log", workers=2,
                        PREDICT_LOG_RETENTION_INTERVAL_S="3600", **env).start()  # fmt: skip
    ids: list[str] = []
    now = datetime.now(UTC)
    try:
        for day in range(DAYS):
            r = server.post("/predict/iris/batch", json={"records": [IRIS_RECORD] * PER_DAY})
            assert r.status_code == 200, r.text
            batch = [p["prediction_id"] for p in r.json()["predictions"]]
            ids += batch
            time.sleep(0.3)  # the log writer flushes within its interval
            when = (now - timedelta(days=DAYS - day, hours=1)).strftime("%Y-%m-%d %H:%M:%S")
            marks = ",".join("?" * len(batch))
            with sqlite3.connect(db, timeout=30) as conn:
                conn.execute(f"UPDATE predictions SET created_at = ? WHERE id IN ({marks})",
                             [when, *batch])  # fmt: skip
        assert count(db, "SELECT count(*) FROM predictions") == DAYS * PER_DAY
    finally:
        server.stop()

    # Now archiving runs every 0.2 s: kill the server once it is well under way.
    server = LiveServer(settings, tmp_path / "second.log", workers=2,
                        PREDICT_LOG_RETENTION_INTERVAL_S="0.2", **env).start()  # fmt: skip
    due = DAYS * PER_DAY - LIVE
    deadline = time.monotonic() + 60
    while count(db, "SELECT count(*) FROM log_archive_files") < 10:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.01)
    server.kill()
    at_kill = count(db, "SELECT count(*) FROM log_archive_files")
    assert count(db, "SELECT count(*) FROM predictions") > DAYS * PER_DAY - due, "finished first"
    print(f"killed with {at_kill} archive files recorded of {due // 20}")

    server = LiveServer(settings, tmp_path / "third.log", workers=2,
                        PREDICT_LOG_RETENTION_INTERVAL_S="0.2", **env).start()  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while count(db, "SELECT count(*) FROM predictions") > LIVE:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        archive = Path(settings.archive_location)
        files = [str(archive / f) for f in _recorded(db)]
        archived = ds.dataset(files, format="parquet").to_table(columns=["id"])["id"].to_pylist()
        with sqlite3.connect(db) as conn:
            live = [r[0] for r in conn.execute("SELECT id FROM predictions")]
        assert len(archived) == len(set(archived)) == due  # each archived row once
        assert len(live) == LIVE
        assert sorted(archived + live) == sorted(ids)  # nothing lost, nothing twice
        unrecorded = {str(p) for p in archive.rglob("*.parquet")} - set(files)
        assert not unrecorded, unrecorded  # the killed run's orphans were removed

        r = server.post("/feedback", json={"prediction_id": ids[0], "actual": "setosa"})
        assert r.status_code == 410 and "is archived" in r.json()["detail"], r.text
        r = server.post("/feedback", json={"prediction_id": ids[-1], "actual": "setosa"})
        assert r.status_code == 200, r.text
        assert server.metric("prediction_log_live_rows", model="iris") == LIVE
    finally:
        server.stop()


def _recorded(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT file FROM log_archive_files")]

"""The prediction log's lifecycle on a real core, SQLite file and archive folder: rows past
retention move to Parquet (every column, verified) and leave the live table; a stop between
the two loses and duplicates nothing; a late label is not lost; a running canary's rows
stay; feedback for an archived prediction gets 410."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, update

from prediction_service.core import Core, build_core
from prediction_service.domain import CanaryState
from prediction_service.errors import GoneError, NotFoundError
from prediction_service.settings import Settings
from prediction_service.storage import archive as archive_module
from prediction_service.storage.archive import LogArchiver
from prediction_service.storage.db import ArchiveFileRecord, PredictionRecord
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import IRIS_RECORD, small_settings

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
Small = tuple[Settings, dict[str, TrainingResult]]


@pytest.fixture
def core(small: Small, tmp_path: Path) -> Iterator[Core]:
    built = build_core(
        small_settings(small, tmp_path, reload_interval_s=3600, log_retention="7d",
                       log_retention_interval_s=3600, log_archive_batch_rows=50)
    )  # fmt: skip
    built.start()
    yield built
    built.close()


def serve_a_month(core: Core, per_day: int = 10, days: int = 30) -> list[str]:
    """``per_day`` iris predictions a day for ``days`` days before NOW (back-dated)."""
    X = core.predictions.codec("iris").matrix([list(IRIS_RECORD.values())] * per_day)
    ids: list[str] = []
    for day in range(days):
        result = core.predictions.predict("iris", X, "native")
        assert core.prediction_log.flush()
        when = NOW - timedelta(days=days - day) + timedelta(hours=1)
        with core.engine.begin() as conn:
            conn.execute(
                update(PredictionRecord)
                .where(PredictionRecord.id.in_(result.ids))
                .values(created_at=when)
            )
        ids += result.ids
    return ids


def live_ids(core: Core) -> set[str]:
    with core.engine.connect() as conn:
        return set(conn.execute(select(PredictionRecord.id)).scalars())


def archived_table(core: Core) -> "ds.Dataset":
    root = Path(core.settings.archive_location)
    return ds.dataset(root, format="parquet", partitioning="hive")


def test_rows_past_retention_move_to_the_archive_whole(core: Core) -> None:
    ids = serve_a_month(core)
    with core.engine.connect() as conn:
        before = {r.id: r._mapping for r in conn.execute(select(PredictionRecord))}
    moved = core.retention.run(NOW)
    assert moved == {"iris": 230, "housing": 0}  # days 1-23 of 30 are older than 7 days
    live = live_ids(core)
    assert len(live) == 70
    assert all(before[i]["created_at"] >= (NOW - timedelta(days=7)).replace(tzinfo=None)
               for i in live)  # fmt: skip
    table = archived_table(core).to_table()
    assert table.num_rows == 230 and set(table["id"].to_pylist()) | live == set(ids)
    assert len(set(table["id"].to_pylist())) == 230
    assert set(table["model"].to_pylist()) == {"iris"}
    assert len(set(table["date"].to_pylist())) == 23  # one folder a day
    row = table.filter(ds.field("id") == ids[0]).to_pylist()[0]
    original = before[ids[0]]
    assert orjson.loads(row["features"]) == original["features"]
    assert orjson.loads(row["prediction"]) == original["prediction"]
    assert orjson.loads(row["probabilities"]) == original["probabilities"]
    assert row["latency_ms"] == original["latency_ms"] and row["protocol"] == "native"
    with core.engine.connect() as conn:
        files = conn.execute(select(func.count(), func.sum(ArchiveFileRecord.rows))).one()
    assert files[1] == 230 and files[0] >= 23
    text = core.metrics.exposition()[0].decode()
    assert 'prediction_log_archived_rows_total{model="iris"} 230.0' in text
    assert 'prediction_log_live_rows{model="iris"} 70.0' in text
    assert 'prediction_log_retention_seconds{model="iris"} 604800.0' in text
    assert core.retention.run(NOW) == {"iris": 0, "housing": 0}  # nothing more to do


def test_feedback_for_an_archived_prediction_is_gone_not_unknown(core: Core) -> None:
    ids = serve_a_month(core, per_day=2)
    core.retention.run(NOW)
    with pytest.raises(GoneError, match="is archived"):
        core.monitor.record_feedback(ids[0], "setosa")
    assert core.monitor.record_feedback(ids[-1], "setosa").actual == "setosa"
    for unknown in ("0123456789abcdef" + "0" * 16, "f" * 32, "not-an-id"):
        with pytest.raises(NotFoundError):
            core.monitor.record_feedback(unknown, "setosa")


def test_a_stop_between_writing_and_deleting_loses_and_duplicates_nothing(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = serve_a_month(core)
    real, calls = LogArchiver._commit, []

    def stopped(self: LogArchiver, *args: object) -> None:
        calls.append(1)
        if len(calls) == 3:  # the third batch's files are written, then the process "dies"
            raise OSError("killed (simulated)")
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LogArchiver, "_commit", stopped)
    core.retention.run(NOW)
    text = core.metrics.exposition()[0].decode()
    assert 'prediction_log_archive_failures_total{model="iris"} 1.0' in text
    on_disk = archived_table(core).to_table()
    assert on_disk.num_rows > 100  # two batches recorded, and the orphan of the third
    monkeypatch.setattr(LogArchiver, "_commit", real)
    core.retention.run(NOW)
    table = archived_table(core).to_table()
    archived = table["id"].to_pylist()
    assert len(archived) == len(set(archived)) == 230
    assert set(archived) | live_ids(core) == set(ids)


def test_a_label_that_arrives_while_rows_are_archived_is_kept(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = serve_a_month(core, per_day=2, days=10)
    real_write = archive_module.Archive.write
    labelled: list[str] = []

    def write_then_label(self: archive_module.Archive, relative: str, table: object) -> str:
        digest = real_write(self, relative, table)  # type: ignore[arg-type]
        if not labelled:
            labelled.append(ids[0])
            core.prediction_log.set_actual(ids[0], "virginica")  # feedback meanwhile
        return digest

    monkeypatch.setattr(archive_module.Archive, "write", write_then_label)
    core.retention.run(NOW)
    table = archived_table(core).to_table()
    assert len(table) == len(set(table["id"].to_pylist())) == 6  # days 1-3 of 10
    row = table.filter(ds.field("id") == ids[0]).to_pylist()[0]
    assert orjson.loads(row["actual"]) == "virginica" and row["actual_at"] is not None


def test_rows_a_running_canary_judges_stay_live(core: Core) -> None:
    ids = serve_a_month(core, per_day=2, days=10)
    with core.engine.connect() as conn:
        seqs = dict(conn.execute(select(PredictionRecord.id, PredictionRecord.seq)).all())
    state = core.automation.states.get("iris")
    state.canary = CanaryState(version="2", champion="1", started_at=0, after_seq=seqs[ids[1]])
    core.automation.states.put("iris", state)
    assert core.retention.run(NOW) == {"iris": 2, "housing": 0}  # only day 1's two rows
    state.canary = None
    core.automation.states.put("iris", state)
    assert core.retention.run(NOW) == {"iris": 4, "housing": 0}
    assert len(live_ids(core)) == 14


def test_training_on_feedback_reads_labelled_rows_from_the_archive(core: Core) -> None:
    from prediction_service.training.feedback import load_feedback

    ids = serve_a_month(core, per_day=2, days=10)
    for i, pid in enumerate(ids):
        core.prediction_log.set_actual(pid, ["setosa", "versicolor"][i % 2])
    core.retention.run(NOW)
    assert len(live_ids(core)) == 14
    spec = core.specs["iris"]
    feedback = load_feedback(spec, core.settings.effective_database_url,
                             core.settings.archive_location)  # fmt: skip
    assert sorted(feedback.ids) == sorted(ids) and len(feedback) == 20
    assert np.isfinite(feedback.X.to_numpy(dtype=float)).all()


def test_export_reads_a_range_from_the_archive_and_the_live_table(
    core: Core, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prediction_service.commands import log as log_command

    ids = serve_a_month(core, per_day=3, days=10)
    core.retention.run(NOW)
    for key, value in core.settings.child_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PREDICT_LOGS_DIR", str(core.settings.logs_path))
    out = tmp_path / "all.parquet"
    assert log_command.main(["export", str(out), "--model", "iris"]) == 0
    table = pq.read_table(out)
    assert table["id"].to_pylist() == ids  # archived then live, oldest first
    assert set(table["model"].to_pylist()) == {"iris"}
    since, until = (NOW - timedelta(days=8)).date(), (NOW - timedelta(days=5)).date()
    assert (
        log_command.main(
            [
                "export",
                str(tmp_path / "some.csv"),
                "--model",
                "iris",
                "--since",
                since.isoformat(),
                "--until",
                until.isoformat(),
            ]
        )
        == 0
    )
    assert "9 rows of iris" in capsys.readouterr().out  # days 2, 3 (archived) and 4 (live)
    assert len(pd.read_csv(tmp_path / "some.csv")) == 9


def test_the_day_partition_query_reads_every_archived_column() -> None:
    assert ", ".join(archive_module.COLUMNS) in archive_module._DAY_ROWS


def test_an_object_store_archive_takes_the_same_files(core: Core) -> None:
    """An archive URL goes through pyarrow's filesystems (here its in-memory one, as s3://
    and gs:// would): written, read back, recorded; the rows leave the live table."""
    from prediction_service.storage.archive import Archive, Retention, catalogued_files

    serve_a_month(core, per_day=2, days=10)
    remote = Archive.at("mock:///bucket/archive")
    assert not remote.local and remote.base == "bucket/archive"
    archiver = LogArchiver(
        core.engine, remote, core.metrics, [Retention("iris", timedelta(days=7))]
    )
    assert archiver.run(NOW) == {"iris": 6}
    files = catalogued_files(core.engine, "iris")
    assert files and all(f.startswith("model=iris/date=") for f in files)
    assert remote.read(files).num_rows == 6 and len(live_ids(core)) == 14

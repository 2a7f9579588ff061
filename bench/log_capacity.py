"""How many prediction-log rows a second one database takes, with the service's own writer.

`python bench/log_capacity.py [--rows 200000]`: for SQLite (a file),
PostgreSQL with the plain table (schema at 0008) and PostgreSQL partitioned by day (head),
the background writer's rows/s for single-row requests (one row per queue item) and for
10,000-row batches, from 1, 2 and 4 writer processes at once (replicas sharing the
database; SQLite takes one process, as it is deployed); then the archiver's rows/s moving
the same rows to Parquet. Each measurement gets a new database (PostgreSQL: on the
machine's cluster, through `runuser -u postgres psql`), dropped after.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import log  # noqa: E402

FEATURES = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup",
            "Latitude", "Longitude"]  # fmt: skip
ROW = np.array([[8.3252, 41.0, 6.98, 1.02, 322.0, 2.56, 37.88, -122.23]])


def _schema(url: str, revision: str) -> None:
    from prediction_service.storage.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine, to=revision)
    engine.dispose()


def _writer(url: str, rows: int, per_item: int, seed: int, out: Any) -> None:
    """One process's writer: ``rows`` rows queued as items of ``per_item`` rows, then timed
    from the writer's start to the last commit."""
    from prediction_service.metrics import Metrics
    from prediction_service.storage.db import make_engine
    from prediction_service.storage.prediction_log import LogBatch, PredictionLog

    # Varied rows, as real traffic is (identical rows would compress to nothing archived).
    rng = np.random.default_rng(seed)
    all_features = ROW * rng.uniform(0.5, 1.5, (rows, ROW.shape[1]))
    all_predictions = rng.uniform(0.15, 5.0, rows).tolist()
    prefix = f"{seed:08x}"
    engine = make_engine(url)
    writer = PredictionLog(engine, Metrics(), max_queue=10**8)
    for k in range(rows // per_item):
        span = slice(k * per_item, (k + 1) * per_item)
        writer.record(LogBatch(
            model="housing", version="1", created_at=time.time(), request_id=None,
            latency_ms=0.05, feature_names=FEATURES,
            ids=[f"{prefix}{k * per_item + i:024x}" for i in range(per_item)],
            features=all_features[span], predictions=all_predictions[span],
        ))  # fmt: skip
    started = time.perf_counter()
    writer.start()
    writer.close()
    out.put(time.perf_counter() - started)
    engine.dispose()


def writers(url: str, rows: int, per_item: int, processes: int) -> float:
    """Rows a second from ``processes`` writers at once, ``rows`` rows each."""
    out: Any = mp.get_context("spawn").Queue()
    procs = [
        mp.get_context("spawn").Process(target=_writer, args=(url, rows, per_item, p, out))
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    seconds = max(out.get() for _ in procs)
    for p in procs:
        p.join()
    return processes * rows / seconds


def bytes_per_row(url: str) -> float:
    """The live table's size on disk (indexes included) per row."""
    from sqlalchemy import text

    from prediction_service.storage.db import make_engine, sqlite_file

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM predictions")).scalar() or 1
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            size = Path(str(sqlite_file(engine))).stat().st_size
        else:
            size = conn.execute(text(
                "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM "
                "pg_partition_tree('predictions')), pg_total_relation_size('predictions'))"
            )).scalar()  # fmt: skip
    engine.dispose()
    return float(size) / rows


def archiving(url: str, rows: int, folder: Path) -> tuple[float, float]:
    """Rows a second the archiver moves (a day's worth, back-dated, at the default batch)."""
    from sqlalchemy import text

    from prediction_service.metrics import Metrics
    from prediction_service.storage import partitions
    from prediction_service.storage.archive import Archive, LogArchiver, Retention
    from prediction_service.storage.db import make_engine

    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if partitions.is_partitioned(conn):
            partitions.ensure(conn, [(now - timedelta(days=40)).date()])
        conn.execute(
            text("UPDATE predictions SET created_at = :t"), {"t": now - timedelta(days=40)}
        )
    archiver = LogArchiver(engine, Archive.at(folder), Metrics(),
                           [Retention("housing", timedelta(days=30))])  # fmt: skip
    started = time.perf_counter()
    moved = archiver.run(now)["housing"]
    seconds = time.perf_counter() - started
    engine.dispose()
    assert moved >= rows, moved
    archived = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    return moved / seconds, archived / moved


def _psql(sql: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-qc", sql],
                   check=True, capture_output=True, timeout=120)  # fmt: skip


def postgres_database() -> tuple[str, str]:
    name = f"bench_log_{secrets.token_hex(4)}"
    _psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_log') "
          "THEN CREATE ROLE bench_log LOGIN PASSWORD 'bench_log'; END IF; END $$;")  # fmt: skip
    _psql(f"CREATE DATABASE {name} OWNER bench_log")
    return name, f"postgresql+psycopg://bench_log:bench_log@127.0.0.1:5432/{name}"


def measure(rows: int) -> dict[str, dict[str, float]]:
    from prediction_service.storage.db import head_revision

    work = Path(tempfile.mkdtemp(prefix="bench-log-"))
    result: dict[str, dict[str, float]] = {}
    made: list[str] = []
    try:
        setups = [("SQLite file", head_revision(), (1,))]
        setups += [("PostgreSQL, one table", "0008", (1, 2, 4)),
                   ("PostgreSQL, partitioned by day", head_revision(), (1, 2, 4))]  # fmt: skip
        for label, revision, counts in setups:
            for per_item in (1, 10_000):
                for processes in counts:
                    if label.startswith("SQLite"):
                        url = f"sqlite:///{work / f'{secrets.token_hex(4)}.db'}"
                    else:
                        name, url = postgres_database()
                        made.append(name)
                    _schema(url, revision)
                    each = rows // processes if per_item == 1 else max(rows // processes, 10_000)
                    log(f"log capacity: {label}, {per_item} row(s) an item, {processes} writer(s)")
                    rate = writers(url, each, per_item, processes)
                    key = f"{'single-row' if per_item == 1 else '10,000-row'} x{processes}"
                    result.setdefault(label, {})[key] = round(rate)
                    if per_item == 10_000 and processes == 1:
                        result[label]["bytes/row live"] = round(bytes_per_row(url))
                        log(f"log capacity: {label}, archiving")
                        rate, size = archiving(url, each, work / secrets.token_hex(4))
                        result[label]["archive"] = round(rate)
                        result[label]["bytes/row archived"] = round(size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for name in made:
            _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return result


def table(result: dict[str, dict[str, float]]) -> str:
    keys = ["single-row x1", "single-row x2", "single-row x4", "10,000-row x1",
            "10,000-row x2", "10,000-row x4", "archive", "bytes/row live",
            "bytes/row archived"]  # fmt: skip
    lines = ["| database | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for label, rates in result.items():
        cells = [f"{rates[k]:,.0f}" if k in rates else "" for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plan(result: dict[str, dict[str, float]], rate: float, days: float) -> str:
    """What ``rate`` predictions a second with ``days`` of retention asks of each database,
    from the rates and sizes measured (arithmetic on them, stated as such)."""
    lines = [f"At {rate:,.0f} predictions a second, {days:g} days live "
             f"({rate * 86_400 / 1e9:.2f} billion rows a day):", ""]  # fmt: skip
    for label, r in result.items():
        best = max(v for k, v in r.items() if k.startswith(("single-row", "10,000-row")))
        live_tb = rate * 86_400 * days * r["bytes/row live"] / 1e12
        archive_gb = rate * 86_400 * r["bytes/row archived"] / 1e9
        behind = (
            f", so the backlog grows {rate - r['archive']:,.0f} rows a second"
            if r["archive"] < rate
            else ""
        )
        lines.append(
            f"- {label}: writes {best / rate:.2f}x the rate at best here; archives "
            f"{r['archive'] / rate:.2f}x it{behind}; the live table holds {live_tb:,.2f} TB; "
            f"the archive grows {archive_gb:,.0f} GB a day."
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per measurement")
    parser.add_argument("--plan", type=float, nargs=2, action="append", metavar=("RATE", "DAYS"),
                        default=None, help="also state what RATE predictions/s with DAYS of "
                        "retention asks (default: 5,000 for 30 days, and 100,000 for 1)")  # fmt: skip
    args = parser.parse_args()
    result = measure(args.rows)
    print(table(result))
    for rate, days in args.plan or [(5_000, 30), (100_000, 1)]:
        print(plan(result, rate, days))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

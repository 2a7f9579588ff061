"""Where a housing batch's CPU goes: `python bench/batch_budget.py [--rows 10000]`.

Times each stage of `POST /predict/housing/batch` in-process, with the service's own objects
(parse, records to array, predict, the service's ids, metrics and log enqueue, encode), then
the log writer's work for the same rows: building the insert parameters (on the writer
thread, under the GIL), the service's insert into a fresh SQLite log, and a bare `sqlite3`
insert of the same parameters with the same statements into the same schema, which tells
SQLite's own share. Median of 5 rounds each, in milliseconds per batch. Uses the default
registry (`make train` first). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import housing_records  # noqa: E402


def per_call_ms(fn: Callable[[], Any], rounds: int = 5) -> float:
    """Median over ``rounds`` calls of ``fn``, after one warm-up call, in milliseconds."""
    fn()
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        took.append(time.perf_counter() - started)
    return float(np.median(took) * 1e3)


def fresh_log(log: Any, folder: Path) -> Any:
    """A prediction log like ``log`` over a new, migrated SQLite file (no writer thread)."""
    from prediction_service.metrics import Metrics
    from prediction_service.storage.db import make_engine, migrate
    from prediction_service.storage.prediction_log import PredictionLog

    engine = make_engine(f"sqlite:///{folder / 'log.db'}")
    migrate(engine)
    return PredictionLog(engine, Metrics(), batch_size=log.batch_size)


async def stages(rows: int) -> dict[str, float]:
    from prediction_service.api.app import create_app
    from prediction_service.protocols import native

    app = create_app()
    core = app.state.core
    body = orjson.dumps({"records": housing_records(rows)})
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        codec, model = core.predictions.codec("housing"), core.store.get("housing")
        predictions, log = core.predictions, core.prediction_log
        X = native.decode_batch(codec, body)
        out["parse (orjson)"] = per_call_ms(lambda: orjson.loads(body))
        out["records to array"] = per_call_ms(lambda: native.decode_batch(codec, body))
        out["records to array"] -= out["parse (orjson)"]
        out["predict"] = per_call_ms(lambda: model.predict(X))
        # The service with the log's enqueue captured: its own work is ids and metrics.
        batches: list[Any] = []
        record, log.record = log.record, batches.append  # type: ignore[method-assign]
        out["ids, metrics"] = per_call_ms(lambda: predictions.predict("housing", X, "native"))
        out["ids, metrics"] -= out["predict"]
        p = predictions.predict("housing", X, "native")
        log.record = record  # type: ignore[method-assign]
        batch = batches[-1]
        out["encode (orjson)"] = per_call_ms(lambda: native.encode_batch(p))
        out["**request, without HTTP**"] = sum(out.values())
        out["writer: build the rows"] = per_call_ms(lambda: log._rows(batch))
        params = log._rows(batch)
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            fresh = fresh_log(log, Path(tmp))
            ids = iter(range(10**9))

            def insert() -> None:  # fresh ids each round: the id column is unique
                fresh._insert([(f"{next(ids):032x}", *r[1:]) for r in params])

            out["writer: insert (the service's, SQLAlchemy)"] = per_call_ms(insert)
            conn = sqlite3.connect(Path(tmp) / "log.db", isolation_level=None)

            def bare() -> None:
                conn.execute("BEGIN")
                done = 0
                while done < len(params):
                    n = min(256, len(params) - done)
                    chunk = [(f"{next(ids):032x}", *r[1:]) for r in params[done : done + n]]
                    conn.execute(fresh._statement(n), tuple(chain.from_iterable(chunk)))
                    done += n
                conn.execute("COMMIT")

            out["writer: insert (bare sqlite3, same statements)"] = per_call_ms(bare)
            conn.close()
            fresh.engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows per batch")
    args = parser.parse_args()
    out = asyncio.run(stages(args.rows))
    print(f"| stage, housing batch of {args.rows:,} rows | ms per batch |")
    print("| --- | --- |")
    for stage, ms in out.items():
        print(f"| {stage} | {ms:.1f} |")


if __name__ == "__main__":
    main()

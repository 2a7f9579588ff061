"""Mixed load against a live server, with exact accounting of what was predicted.

`make loadtest` (20,000 requests at concurrency 32) or `python bench/loadtest.py --help`.
The mix: single rows for both models (native, V2 REST and /invocations), batches of 2 to 200
rows, and invalid requests (values out of range, strings, bad JSON, unknown models, empty
batches). It prints the requests sent by kind, the statuses seen, how many were 5xx, and the
rows that were predicted; with ``--database`` (after the server stopped) it also counts the
prediction log's rows, which must equal the rows predicted.

A small asyncio driver rather than locust: the point is exact accounting (every successful
request's rows, compared with the log), which locust's aggregated statistics do not give,
and aiohttp (already installed with MLflow) is all it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, too
from bench.bodies import BODIES as RECORDS  # noqa: E402


@dataclass(frozen=True)
class Call:
    kind: str
    path: str
    body: bytes
    rows: int  # rows predicted when it succeeds (0 for an invalid request)


@dataclass
class Result:
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # valid refused, invalid accepted
    rows_predicted: int = 0
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": sum(self.sent.values()),
            "by_kind": dict(self.sent),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": self.server_errors,
            "unexpected": self.unexpected[:10],
            "rows_predicted": self.rows_predicted,
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(sum(self.sent.values()) / max(self.seconds, 1e-9), 1),
        }


def _row(rng: random.Random, model: str) -> dict[str, float]:
    return {k: v * rng.uniform(0.9, 1.1) if k not in ("Latitude", "Longitude") else v
            for k, v in RECORDS[model].items()}  # fmt: skip


def plan(n: int, seed: int = 0) -> list[Call]:
    """``n`` calls in a fixed, seeded mix."""
    rng = random.Random(seed)
    calls = []
    for _ in range(n):
        model = rng.choice(sorted(RECORDS))
        row = _row(rng, model)
        draw = rng.random()
        if draw < 0.50:
            calls.append(Call("single", f"/predict/{model}", json.dumps(row).encode(), 1))
        elif draw < 0.60:
            body = {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP64",
                                "data": list(row.values())}]}  # fmt: skip
            calls.append(Call("v2", f"/v2/models/{model}/infer", json.dumps(body).encode(), 1))
        elif draw < 0.70:
            body = {"dataframe_records": [row]}
            calls.append(Call("mlflow", "/invocations", json.dumps(body).encode(), 1))
        elif draw < 0.85:
            size = rng.randint(2, 200)
            records = [_row(rng, model) for _ in range(size)]
            body = json.dumps({"records": records}).encode()
            calls.append(Call("batch", f"/predict/{model}/batch", body, size))
        else:
            calls.append(_invalid(rng, model, row))
    return calls


def _invalid(rng: random.Random, model: str, row: dict[str, float]) -> Call:
    first = next(iter(row))
    bodies = [
        json.dumps({**row, first: 1e308}),
        json.dumps({**row, first: str(row[first])}),
        json.dumps({**row, first: True}),
        json.dumps({k: v for k, v in row.items() if k != first}),
        '{"truncated": ',
        "[" * 5000 + "]" * 5000,
        json.dumps({**row, "ünïcödé": "☃"}),
    ]
    draw = rng.random()
    if draw < 0.1:
        return Call("invalid", "/predict/wine", json.dumps(row).encode(), 0)
    if draw < 0.2:
        return Call("invalid", f"/predict/{model}/batch", b'{"records": []}', 0)
    return Call("invalid", f"/predict/{model}", rng.choice(bodies).encode(), 0)


async def drive(
    url: str, calls: list[Call], concurrency: int, headers: dict[str, str] | None = None
) -> Result:
    result = Result()
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, timeout=timeout, headers=headers) as session:

        async def worker() -> None:
            while not queue.empty():
                call = queue.get_nowait()
                result.sent[call.kind] += 1
                try:
                    async with session.post(
                        call.path, data=call.body, headers={"Content-Type": "application/json"}
                    ) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    result.statuses[599] += 1
                    result.unexpected.append(f"{call.kind} {call.path}: {exc}")
                    continue
                result.statuses[status] += 1
                ok = 200 <= status < 300
                if ok and call.rows:
                    result.rows_predicted += call.rows
                elif ok != bool(call.rows):
                    result.unexpected.append(f"{call.kind} {call.path} answered {status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def logged_rows(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT COUNT(*) FROM predictions")).scalar_one())
    engine.dispose()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", help="a bearer token with the predict scope, if closed")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    result = asyncio.run(drive(args.url, plan(args.requests, args.seed), args.concurrency, headers))
    print(json.dumps(result.summary(), indent=2))
    return 1 if result.server_errors or result.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())

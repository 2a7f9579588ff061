"""Time and profile one route in-process, through the whole ASGI stack but without HTTP.

`python bench/profile_request.py --help`. Uses the default registry (mlruns/, `make train`
first) and a throw-away prediction log. Prints microseconds per request, then the top of a
cProfile listing: this is how the request path was profiled (483 -> 138 us for iris).
The timed loop also gives the per-request p50/p99 and the garbage collections it triggered.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bodies import BODIES  # noqa: E402


async def call(app: Any, path: str, body: bytes) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def run(args: argparse.Namespace) -> None:
    from prediction_service.api.app import create_app

    app = create_app()
    if args.batch:
        frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").drop(columns="MedHouseVal")
        records = frame.sample(args.batch, random_state=0).to_dict(orient="records")
        path, body = "/predict/housing/batch", json.dumps({"records": records}).encode()
    else:
        path, body = f"/predict/{args.model}", json.dumps(BODIES[args.model]).encode()
    async with app.router.lifespan_context(app):
        for _ in range(min(args.n, 200)):
            assert await call(app, path, body) == 200
        collections = [0, 0, 0]

        def count(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                collections[info["generation"]] += 1

        gc.callbacks.append(count)
        took = []
        for _ in range(args.n):
            started = time.perf_counter()
            await call(app, path, body)
            took.append(time.perf_counter() - started)
        gc.callbacks.remove(count)
        us = np.array(took) * 1e6
        print(
            f"{path}: {us.mean():,.0f} us per request (p50 {np.percentile(us, 50):,.0f}, "
            f"p99 {np.percentile(us, 99):,.0f}, max {us.max():,.0f}); garbage collections "
            f"by generation: {collections}"
        )
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.n):
            await call(app, path, body)
        profile.disable()
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BODIES), default="iris")
    parser.add_argument("--batch", type=int, default=0, help="profile a housing batch of N rows")
    parser.add_argument("-n", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.batch:
        args.n = min(args.n, 5)
    os.environ.setdefault("PREDICT_DATABASE_URL", f"sqlite:///{tempfile.mkdtemp()}/profile.db")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

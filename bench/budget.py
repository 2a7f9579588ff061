"""Where a single-row request's microseconds go: `python bench/budget.py [--model housing]`.

Times each stage of `POST /predict/<model>` on its own, in-process, with the objects the
service uses (parse, validate, predict, metrics, log enqueue, encode), then the whole request
through the app without HTTP (the rest is the framework: our HTTP middleware and the
prediction lane, which answer predictions in front of FastAPI's stack, and GC). Then, over HTTP with wrk at concurrency 8, the CPU each
thread of the real server spends per request (from /proc), beside a bare ASGI app on the
same uvicorn settings and HTTP protocol: what the server itself (uvicorn, the kernel's
sockets) costs.
Uses the default registry (`make train` first). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_request import BODIES, ROOT, call  # noqa: E402
from run import free_port, server  # noqa: E402


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Median over 5 rounds of the mean time of ``n`` calls, in microseconds."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - started) / n * 1e6)
    return float(np.median(rounds))


async def in_process(model: str, n: int) -> dict[str, float]:
    from prediction_service.api.app import create_app
    from prediction_service.protocols import native
    from prediction_service.shortcuts import observe_one
    from prediction_service.storage.prediction_log import LogBatch

    app = create_app()
    core = app.state.core
    body = orjson.dumps(BODIES[model])
    path = f"/predict/{model}"
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        for _ in range(300):
            await call(app, path, body)
        codec, served = core.predictions.codec(model), core.store.get(model)
        obj = orjson.loads(body)
        X = codec.record(obj)
        p = core.predictions.predict(model, X, native.NAME)
        m = core.metrics
        inst = core.predictions._instruments_for(served)
        rows = served.predict(X).tolist()
        best = None if served.classes is None else core.predictions._best(served.predict(X), rows)
        http = (m.http_requests.labels(path, "POST", "200"), m.http_latency.labels(path, "POST"))

        def metrics() -> None:
            m.http_in_flight.inc()
            m.http_in_flight.dec()
            http[0].inc()
            observe_one(http[1], 0.0004)
            inst.predictions[native.NAME].inc(1)
            observe_one(inst.latency["single"], 0.00002)
            core.predictions._count(inst, served.predict(X), rows, best, served.classes)

        predict_us = per_call_us(lambda: served.predict(X), n)
        log = core.prediction_log

        ids = iter(range(10**9))
        probabilities = None if best is None else served.predict(X)

        def enqueue() -> None:
            log.record(
                LogBatch(model, served.version, time.time(), None, 0.02, served.spec.feature_names,
                         [f"{next(ids):032x}"], X, rows if best is None else best, probabilities,
                         served.classes)  # fmt: skip
            )

        gc.disable()  # the stages alone; collections are the framework's share below
        out["parse"] = per_call_us(lambda: orjson.loads(body), n)
        out["validate"] = per_call_us(lambda: codec.record(obj), n)
        out["predict"] = predict_us
        # The metrics and log stages re-run the model for their inputs; subtract it.
        out["metrics"] = per_call_us(metrics, n) - predict_us
        # The writer waits meanwhile (it would share the GIL with the timing loop).
        wait, size = log.flush_interval_s, log.batch_size
        log.flush_interval_s, log.batch_size = 3600.0, 10**9
        log.flush(30)
        out["log enqueue"] = per_call_us(enqueue, n)
        log.flush_interval_s, log.batch_size = wait, size
        out["encode"] = per_call_us(lambda: native.encode_one(p), n)
        gc.enable()
        log.flush(30)
        took = []
        for _ in range(n):
            started = time.perf_counter()
            await call(app, path, body)
            took.append(time.perf_counter() - started)
        out["in-process request"] = float(np.median(took) * 1e6)
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[task.name] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def live_us(cmd: list[str], port: int, model: str, seconds: int) -> tuple[float, float, float]:
    """(requests/s, CPU us per request of the busiest thread, of all other threads)."""
    env = {**os.environ}
    with server(cmd, "/ready", port, env) as s:
        url = f"{s['url']}/predict/{model}"
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{json.dumps(BODIES[model])}]==]\n"
        )
        wrk = ["wrk", "-t1", "-c8", "-s", str(script), url]
        subprocess.run([*wrk[:1], "-d2s", *wrk[1:]], capture_output=True, check=True)
        before = thread_cpu(s["pid"])
        text = subprocess.run([*wrk[:1], f"-d{seconds}s", *wrk[1:]], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        after = thread_cpu(s["pid"])
        script.unlink()
    requests = int(text.split(" requests in")[0].split()[-1])
    used = sorted((after[t] - before.get(t, 0.0) for t in after), reverse=True)
    main, rest = used[0], sum(used[1:])
    return requests / seconds, main / requests * 1e6, rest / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BODIES), default="iris")
    parser.add_argument("-n", type=int, default=3000, help="calls per timing round")
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per live point")
    args = parser.parse_args()
    os.environ.setdefault("PREDICT_DATABASE_URL", f"sqlite:///{tempfile.mkdtemp()}/budget.db")
    stages = asyncio.run(in_process(args.model, args.n))
    port = free_port()
    bare = live_us([sys.executable, "bench/ceiling.py", "--port", str(port), "--bare"],
                   port, "iris", args.seconds)  # fmt: skip
    port = free_port()
    ours = live_us([sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"],
                   port, args.model, args.seconds)  # fmt: skip
    parts = ("parse", "validate", "predict", "metrics", "log enqueue", "encode")
    framework = stages["in-process request"] - sum(stages[k] for k in parts)
    print(f"| stage, {args.model} single row | us per request |\n| --- | --- |")
    for k in parts:
        print(f"| {k} | {stages[k]:.1f} |")
    print(f"| framework: HTTP middleware, lane, GC | {framework:.1f} |")
    print(f"| **in-process request** (sum of the above) | **{stages['in-process request']:.1f}** |")
    print(f"| server: uvicorn and sockets (bare ASGI app's event-loop thread) | {bare[1]:.1f} |")
    print(f"| live: our event-loop thread | {ours[1]:.1f} |")
    print(f"| live: our other threads (log writer, polls) | {ours[2]:.1f} |")
    print(f"| live: unexplained (event-loop thread - in-process - server) | "
          f"{ours[1] - stages['in-process request'] - bare[1]:.1f} |")  # fmt: skip
    print(
        f"\nwrk c=8: ours {ours[0]:,.0f} req/s, bare ASGI {bare[0]:,.0f} req/s "
        f"({ours[0] / bare[0]:.0%}); bare's other threads {bare[2]:.1f} us/request"
    )


if __name__ == "__main__":
    os.chdir(ROOT)
    main()

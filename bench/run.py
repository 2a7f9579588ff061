"""Benchmark the API against its peers and the HTTP ceilings, in one run.

`make bench` (or `python bench/run.py --help`). Trains both models into a fresh registry
(timing it), then starts the servers on loopback, warms them, drives them with wrk (HTTP) or
h2load (gRPC) and stops them by process group: ours (every protocol) beside Seldon MLServer
on the same champions (alternating runs), `mlflow models serve`, and two constant-reply
ceilings (FastAPI, and a bare ASGI app); and every model with derived features fitted with
and without them (bench/derived_features.py). Writes bench/results/latest.json and latest.md and
is shown on the docs' Performance page. Absolute numbers move from machine to machine; the ratios
within one run are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/run.py` finds the bench package beside peers
RESULTS = ROOT / "bench" / "results"
from bench.bodies import BODIES  # noqa: E402

# The peers' comparisons run on the two shipped models.
IRIS, HOUSING = BODIES["iris"], BODIES["housing"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


@contextmanager
def server(
    cmd: list[str], ready_path: str, port: int, env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """Start, wait for ready (timing it), yield, then stop by process group id."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}")
            try:
                if requests.get(url + ready_path, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd[:3]} not ready")
            time.sleep(0.05)
        yield {"url": url, "pid": proc.pid, "cold_start_s": time.perf_counter() - started}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(url: str, body: dict[str, Any], connections: int, seconds: int) -> dict[str, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{json.dumps(body)}]==]\n"  # level-2 brackets: bodies contain ]]
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    script.unlink()

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx replies; the numbers would lie")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def warm(url: str, body: dict[str, Any], n: int = 200) -> None:
    with requests.Session() as s:
        for _ in range(n):
            s.post(url, json=body, timeout=30).raise_for_status()


def rows_per_second(url: str, body: dict[str, Any], rows: int, calls: int) -> float:
    """Rows per second over ``calls`` sequential requests. The body is encoded once, so the
    client's JSON encoder (tens of ms for 10,000 rows) is not timed as the server's."""
    data, headers = json.dumps(body).encode(), {"content-type": "application/json"}
    with requests.Session() as s:
        s.post(url, data=data, headers=headers, timeout=120).raise_for_status()
        started = time.perf_counter()
        for _ in range(calls):
            s.post(url, data=data, headers=headers, timeout=120).raise_for_status()
        return rows * calls / (time.perf_counter() - started)


def housing_records(n: int) -> list[dict[str, float]]:
    """``n`` rows of the housing data set's features, the same rows every run."""
    frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").drop(columns="MedHouseVal")
    return frame.sample(n, random_state=0).to_dict(orient="records")


def mlflow_body(records: list[dict[str, float]]) -> dict[str, Any]:
    columns = list(records[0])
    return {
        "dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench import derived_features, peers
    from prediction_service.specs import load_specs

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # mlflow serve needs uvicorn
        "PREDICT_HOME": str(ROOT),
        "PREDICT_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PREDICT_ARTIFACT_ROOT": str(work / "artifacts"),
        "PREDICT_DATABASE_URL": f"sqlite:///{work / 'predictions.db'}",
        "PREDICT_LOGS_DIR": str(work / "logs"),
    }
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "duration_s": args.seconds,
        "rounds": args.rounds,
        "training_s": {},
        "single": {},
        "protocols": {},
        "batch_rows_per_s": {},
        "cold_start_s": {},
        "rss_mb": {},
    }
    for model in ("housing", "iris"):
        log(f"training {model}")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, f"train_{model}.py"], env=env, cwd=ROOT, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result["training_s"][model] = round(time.perf_counter() - started, 1)

    log("models with and without their derived features")
    result["derived_features"] = derived_features.measure()

    batches = {n: housing_records(n) for n in (1000, 10000)}
    single, protocols = result["single"], result["protocols"]
    specs = load_specs(ROOT / "config" / "models")

    # -- ours, and Seldon MLServer on the same champions (both up; points alternate) ----
    mlserver_dir = work / "mlserver"
    ml_http, ml_grpc = free_port(), free_port()
    peers.export_for_mlserver(
        env["PREDICT_TRACKING_URI"], work / "artifacts", mlserver_dir, ml_http, ml_grpc
    )
    mlserver_cmd = [*peers.mlserver_command(), "start", str(mlserver_dir)]
    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
    api_env = {**env, "PREDICT_GRPC_PORT": str(grpc_port)}
    with (
        server(cmd, "/ready", port, api_env) as s,
        server(mlserver_cmd, "/v2/health/ready", ml_http, env) as m,
    ):
        result["cold_start_s"]["api"] = round(s["cold_start_s"], 2)
        result["cold_start_s"]["mlserver"] = round(m["cold_start_s"], 2)
        single.update(single_rows(s["url"], "api", BODIES, args))
        c = max(args.connections)
        for model, body in BODIES.items():
            v2 = peers.v2_body(body)
            # MLServer's gRPC encoder fails on string class names ("expected bytes, str
            # found"), so classifiers are asked, by both servers, for predict_proba only.
            outputs = ["predict_proba"] if specs[model].task == "classification" else []
            frame = peers.grpc_frame(model, body, outputs)
            points = {
                "v2 rest": lambda u: wrk(f"{u}/v2/models/{model}/infer", v2, c, args.seconds),
                "v2 grpc": lambda g: peers.h2load(g, frame, c, args.seconds),
            }
            targets = {
                "v2 rest": {"ours": s["url"], "mlserver": m["url"]},
                "v2 grpc": {"ours": grpc_port, "mlserver": ml_grpc},
            }
            warm(f"{s['url']}/v2/models/{model}/infer", v2, 100)
            warm(f"{m['url']}/v2/models/{model}/infer", v2, 100)
            for lane, measure in points.items():
                runs: dict[str, list[dict[str, float]]] = {"ours": [], "mlserver": []}
                for r in range(args.rounds):
                    for who, target in targets[lane].items():
                        log(f"{who} {lane} {model} c={c} (round {r + 1})")
                        runs[who].append(measure(target))  # type: ignore[operator]
                for who, measured in runs.items():
                    protocols[f"{who} {lane} {model}"] = median_run(measured)
        for model, body in BODIES.items():
            url = f"{s['url']}/invocations"
            warm(url, mlflow_body([body]), 100)
            log(f"api /invocations {model} c={c}")
            protocols[f"ours invocations {model}"] = wrk(url, mlflow_body([body]), c, args.seconds)
        result["rss_mb"]["api"] = round(tree_rss(s["pid"]) / 2**20, 1)
        result["rss_mb"]["mlserver"] = round(tree_rss(m["pid"]) / 2**20, 1)
        for n, rows in batches.items():
            log(f"api batch {n}")
            result["batch_rows_per_s"][f"api {n}"] = round(
                rows_per_second(
                    f"{s['url']}/predict/housing/batch", {"records": rows}, n, args.batch_calls
                )
            )
        metrics = requests.get(f"{s['url']}/metrics", timeout=10).text
    result["log_write"] = prediction_log_cost(metrics)

    # -- ours with two workers (wrk shares the two cores with them) ----------------------
    port = free_port()
    cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning",
           "--workers", "2"]  # fmt: skip
    with server(cmd, "/ready", port, env) as s:
        single.update(single_rows(s["url"], "api2", BODIES, args))

    # -- mlflow models serve -----------------------------------------------------------
    for model, registered, body in (
        ("iris", "IrisBestModel", IRIS), ("housing", "CaliforniaHousingBestModel", HOUSING),
    ):  # fmt: skip
        port = free_port()
        cmd = [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{registered}@champion",
            "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1",
        ]  # fmt: skip
        with server(cmd, "/ping", port, env) as s:
            result["cold_start_s"][f"mlflow {model}"] = round(s["cold_start_s"], 2)
            url = f"{s['url']}/invocations"
            warm(url, mlflow_body([body]), 50)
            for c in args.connections:
                log(f"mlflow {model} c={c}")
                single[f"mlflow {model} c{c}"] = wrk(url, mlflow_body([body]), c, args.seconds)
            result["rss_mb"][f"mlflow {model}"] = round(tree_rss(s["pid"]) / 2**20, 1)
            if model == "housing":
                for n, rows in batches.items():
                    log(f"mlflow batch {n}")
                    result["batch_rows_per_s"][f"mlflow {n}"] = round(
                        rows_per_second(url, mlflow_body(rows), n, args.batch_calls)
                    )

    # -- the HTTP ceilings: FastAPI answering a constant, and a bare ASGI app -----------
    for label, extra in (("ceiling", []), ("bare", ["--bare"])):
        port = free_port()
        cmd = [sys.executable, "bench/ceiling.py", "--port", str(port), *extra]
        with server(cmd, "/ready", port, env) as s:
            url = f"{s['url']}/predict/iris"
            warm(url, IRIS)
            for c in args.connections:
                log(f"{label} c={c}")
                single[f"{label} c{c}"] = wrk(url, IRIS, c, args.seconds)

    # -- a shadow of 100% of traffic, on and off on one server (last: it adds versions) ---
    from bench import shadow_cost

    result["shadow"] = shadow_cost.measure(env, args.rounds, args.seconds)

    # -- offline scoring: 2 million rows, against mlflow models predict and spark_udf --------
    from bench import scoring

    result["scoring"] = scoring.measure(env, args.scoring_rows, args.rounds)
    shutil.rmtree(work, ignore_errors=True)
    return result


def single_rows(
    base: str, label: str, records: dict[str, dict[str, float]], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """``/predict/<model>`` of each model at each concurrency, keyed ``"<label> <model> c<n>"``."""
    out = {}
    for model, body in records.items():
        url = f"{base}/predict/{model}"
        warm(url, body)
        for c in args.connections:
            log(f"{label} /predict/{model} c={c}")
            out[f"{label} {model} c{c}"] = wrk(url, body, c, args.seconds)
    return out


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median throughput (its latencies with it), and every run's req/s."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return {**ordered[(len(ordered) - 1) // 2], "all_rps": [r["rps"] for r in runs]}  # type: ignore[dict-item]


def prediction_log_cost(metrics: str) -> dict[str, float]:
    """The log's cost: enqueueing a single-row request (on the request path), and the
    background writer's time per row, for single-row requests and for 10,000-row batches."""
    from prediction_service.metrics import Metrics
    from prediction_service.storage.db import make_engine, migrate
    from prediction_service.storage.prediction_log import LogBatch, PredictionLog

    def batch(ids: list[str], features: np.ndarray) -> LogBatch:
        return LogBatch(
            model="housing", version="1", created_at=time.time(), request_id=None,
            latency_ms=0.05, feature_names=list(HOUSING), ids=ids, features=features,
            predictions=[4.5] * len(ids),
        )  # fmt: skip

    def writer_us(batches: list[LogBatch]) -> float:
        tmp = Path(tempfile.mkdtemp(prefix="bench-log-"))
        engine = make_engine(f"sqlite:///{tmp / 'log.db'}")
        migrate(engine)
        log_ = PredictionLog(engine, Metrics(), max_queue=10**7)
        for b in batches:
            log_.record(b)
        started = time.perf_counter()
        log_.start()
        log_.close()
        elapsed = time.perf_counter() - started
        shutil.rmtree(tmp, ignore_errors=True)
        return elapsed / sum(b.size for b in batches) * 1e6

    n, row = 50_000, np.array([list(HOUSING.values())])
    singles = [batch([f"{i:032x}"], row) for i in range(n)]
    probe = PredictionLog(make_engine("sqlite://"), Metrics(), max_queue=10**7)
    started = time.perf_counter()
    for i in range(n):
        probe.record(batch([f"{i:032x}"], row))
    enqueue_us = (time.perf_counter() - started) / n * 1e6
    rows = np.repeat(row, 10_000, axis=0)
    batches = [batch([f"{k:08x}{i:024x}" for i in range(10_000)], rows) for k in range(5)]
    written = re.search(r"^prediction_log_written_total ([\d.e+]+)", metrics, re.M)
    return {
        "enqueue_us_per_row": round(enqueue_us, 2),
        "writer_us_per_row": round(writer_us(singles), 2),
        "writer_us_per_row_batched": round(writer_us(batches), 2),
        "rows_written_during_bench": float(written.group(1)) if written else 0.0,
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def markdown(r: dict[str, Any]) -> str:
    s, p = r["single"], r["protocols"]
    lines = [
        f"Measured {r['when']} on {r['machine']['cpus']} cores, Python {r['machine']['python']}; "
        f"wrk (HTTP) or h2load (gRPC), {r['duration_s']} s per point, single-row requests over "
        "loopback. Ours runs with prediction logging and metrics on. Ceilings: FastAPI answering "
        "a constant, and a bare ASGI app answering it, on the same uvicorn settings and HTTP "
        "protocol as ours.",
        "",
        "| endpoint | conc. | req/s | p50 ms | p99 ms | vs mlflow serve | of FastAPI constant "
        "| of bare ASGI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"api": "ours", "api2": "ours, 2 workers", "mlflow": "mlflow models serve",
             "ceiling": "FastAPI constant", "bare": "bare ASGI constant"}  # fmt: skip
    for key, v in s.items():
        server_name, *rest = key.split()
        conc = key.rsplit("c", 1)[1]
        model = rest[0] if len(rest) == 2 else ""
        ours = server_name in ("api", "api2")
        vs_mlflow = ratio(v["rps"], s[f"mlflow {model} c{conc}"]["rps"]) if ours else ""
        vs_fastapi = f"{v['rps'] / s[f'ceiling c{conc}']['rps']:.0%}" if ours else ""
        vs_bare = f"{v['rps'] / s[f'bare c{conc}']['rps']:.0%}" if ours else ""
        lines.append(
            f"| {names[server_name]} {model} | {conc} | {v['rps']:,.0f} | {v['p50_ms']:.2f} "
            f"| {v['p99_ms']:.2f} | {vs_mlflow} | {vs_fastapi} | {vs_bare} |"
        )
    lines += [
        "",
        f"Standard protocols at concurrency {max(int(k.rsplit('c', 1)[1]) for k in s)}, median "
        f"of {r['rounds']} alternating runs against Seldon MLServer 1.7 serving the same "
        "champions (its sklearn and LightGBM runtimes, `parallel_workers: 0`). Iris over gRPC "
        "asks both for `predict_proba` only: MLServer's gRPC encoder fails on string class "
        "names.",
        "",
        "| lane | model | ours req/s | ours latency ms | peer | peer req/s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lane, label in (("v2 rest", "V2 REST"), ("v2 grpc", "V2 gRPC")):
        for model in ("iris", "housing"):
            ours, peer = p[f"ours {lane} {model}"], p[f"mlserver {lane} {model}"]
            latency = (
                f"p50 {ours['p50_ms']:.2f}, p99 {ours['p99_ms']:.2f}"
                if "p99_ms" in ours
                else f"mean {ours['mean_ms']:.2f}"
            )
            lines.append(
                f"| {label} | {model} | {ours['rps']:,.0f} | {latency} | MLServer "
                f"| {peer['rps']:,.0f} | {ratio(ours['rps'], peer['rps'])} |"
            )
    conc = max(int(k.rsplit("c", 1)[1]) for k in s)
    for model in ("iris", "housing"):
        ours, peer = p[f"ours invocations {model}"], s[f"mlflow {model} c{conc}"]
        lines.append(
            f"| /invocations | {model} | {ours['rps']:,.0f} | p50 {ours['p50_ms']:.2f}, "
            f"p99 {ours['p99_ms']:.2f} | mlflow models serve | {peer['rps']:,.0f} "
            f"| {ratio(ours['rps'], peer['rps'])} |"
        )
    b = r["batch_rows_per_s"]
    lines += [
        "",
        "| housing batch | ours rows/s | mlflow serve rows/s | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for n in (1000, 10000):
        lines.append(
            f"| {n:,} rows | {b[f'api {n}']:,} | {b[f'mlflow {n}']:,} | {ratio(b[f'api {n}'], b[f'mlflow {n}'])} |"
        )
    if "derived_features" in r:
        from bench import derived_features

        lines += ["", derived_features.markdown(r["derived_features"]).rstrip("\n")]
    if "shadow" in r:
        from bench import shadow_cost

        lines += ["", "A shadow of 100% of traffic (c=8, alternating on one server):", "",
                  shadow_cost.table(r["shadow"])]  # fmt: skip
    if "scoring" in r:
        from bench import scoring

        lines += ["", scoring.table(r["scoring"]).rstrip("\n")]
    cs, rss = r["cold_start_s"], r["rss_mb"]
    lw = r["log_write"]
    lines += [
        "",
        "| | ours (both models) | MLServer (both models) | mlflow serve (iris) | mlflow serve (housing) |",
        "| --- | --- | --- | --- | --- |",
        f"| cold start to ready (s) | {cs['api']} | {cs['mlserver']} | {cs['mlflow iris']} | {cs['mlflow housing']} |",
        f"| resident memory after warm-up (MB) | {rss['api']} | {rss['mlserver']} | {rss['mlflow iris']} | {rss['mlflow housing']} |",
        "",
        f"Prediction log: {lw['enqueue_us_per_row']} µs per single-row request on the request "
        f"path (building and enqueueing the log record); in the background writer (SQLite) "
        f"{lw['writer_us_per_row']} µs per row from single-row requests and "
        f"{lw['writer_us_per_row_batched']} µs per row from 10,000-row batches. "
        f"Training: housing {r['training_s']['housing']} s, iris {r['training_s']['iris']} s "
        "(all candidates, 5-fold CV, logging and registration included).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batch-calls", type=int, default=5, help="timed calls per batch size")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating runs per point against MLServer"
    )
    parser.add_argument("--scoring-rows", type=int, default=2_000_000,
                        help="rows of the offline scoring input")  # fmt: skip
    args = parser.parse_args()
    for program, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if not shutil.which(program):
            print(f"{program} is missing: apt-get install {package}", file=sys.stderr)
            return 2
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

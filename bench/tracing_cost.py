"""What tracing costs the answers: single-row req/s and p99 at c=8 with tracing off, on at
100% sampling and on at 1%, exporting over OTLP/HTTP to a receiver on this machine.

`python bench/tracing_cost.py [--rounds 2] [--seconds 10]` over the default registry
(`make train` first; `make bench` runs it on its own). The three servers are started in turn
within each round, so each ratio compares runs minutes apart at most. The receiver (in this
process) reads and acknowledges every export without decoding it: a collector's own cost
is not ours.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import BODIES, ROOT, free_port, log, server, warm, wrk  # noqa: E402

SIDES = {
    "off": {},
    "100%": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "1%": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
}


class Receiver:
    """OTLP/HTTP's endpoint, reduced to reading each body and answering 200."""

    def __init__(self) -> None:
        self.bytes = 0

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                receiver.bytes += len(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def measure(
    env: dict[str, str], rounds: int, seconds: int, sides: tuple[str, ...] = tuple(SIDES)
) -> dict[str, Any]:
    receiver = Receiver()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {m: {s: [] for s in sides} for m in BODIES}
    exported: dict[str, int] = {s: 0 for s in sides}
    for r in range(rounds):
        for side in sides:
            extra = SIDES[side]
            port = free_port()
            side_env = {**env, **extra}
            if side != "off":
                side_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
            cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
            with server(cmd, "/ready", port, side_env) as s:
                before = receiver.bytes
                for model, body in BODIES.items():
                    target = f"{s['url']}/predict/{model}"
                    warm(target, body, 300)
                    log(f"{model} c=8 tracing {side} (round {r + 1})")
                    runs[model][side].append(wrk(target, body, 8, seconds))
                exported[side] += receiver.bytes - before
    out: dict[str, Any] = {"exported_bytes": exported}
    for model, sides in runs.items():
        mid = {s: {k: median(p[k] for p in points) for k in ("rps", "p99_ms")}
               for s, points in sides.items()}  # fmt: skip
        out[model] = {
            "sides": mid, "runs": sides,
            **{f"rps_ratio {s}": round(mid[s]["rps"] / mid["off"]["rps"], 3) for s in sides},
            **{f"p99_ratio {s}": round(mid[s]["p99_ms"] / mid["off"]["p99_ms"], 3) for s in sides},
        }  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| model | tracing | req/s (median) | vs off | p99 ms | p99 vs off |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model in BODIES:
        r = result[model]
        for side in r["sides"]:
            s = r["sides"][side]
            lines.append(
                f"| {model} | {side} | {s['rps']:,.0f} | {r[f'rps_ratio {side}']:.2f}x "
                f"| {s['p99_ms']:.2f} | {r[f'p99_ratio {side}']:.2f}x |"
            )
    sent = result["exported_bytes"]
    lines += ["", "OTLP bytes exported: " + ", ".join(f"{s} {n:,}" for s, n in sent.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three servers")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated, from {', '.join(SIDES)}"
    )
    args = parser.parse_args()
    sides = tuple(args.sides.split(","))
    if sides[0] != "off" or not set(sides) <= set(SIDES):
        parser.error(f"--sides: 'off' first, then any of {', '.join(SIDES)}")
    env = {**os.environ, "PREDICT_HOME": str(ROOT)}
    print(table(measure(env, args.rounds, args.seconds, sides)))


if __name__ == "__main__":
    main()

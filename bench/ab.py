"""Compare this working tree's server with another revision's, in alternating wrk runs.

`python bench/ab.py --base REV [--model iris] [--protocol v2|grpc] [--rounds 2]`. This machine's speed drifts by
10-30 % over minutes, so two `make bench` runs taken apart say little about a small change;
alternating old and new in one script does. REV is checked out into a temporary git worktree
and served with its own source (PYTHONPATH) against this tree's registry (mlruns/, so
`make train` first). Prints req/s and p99 at concurrency 1 and 8 per run (gRPC: calls/s and
the mean, by h2load). A base with a
native forest kernel (setup.py) gets it built in its worktree, so housing compares like with
like. `--batch N` times N-row housing batches instead (rows/s over 8 sequential calls), and
`--explain N` N-row housing explanations (rows/s over 4 calls).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import peers  # noqa: E402
from bench.run import (  # noqa: E402
    BODIES,
    ROOT,
    free_port,
    housing_records,
    rows_per_second,
    server,
    warm,
    wrk,
)


def measure(url: Any, args: argparse.Namespace, batch: list[dict[str, float]]) -> str:
    """One server's figures: wrk (h2load for gRPC, ``url`` its port) at concurrency 1 and 8,
    or rows/s of ``batch``."""
    if batch:
        route, calls = ("explain", 4) if args.explain else ("predict", 8)
        rows = rows_per_second(
            f"{url}/{route}/housing/batch", {"records": batch}, len(batch), calls
        )
        return f"{len(batch):,}-row {route} batches {rows:,.0f} rows/s"
    if args.protocol == "grpc":
        frame = peers.grpc_frame(args.model, BODIES[args.model], [])
        for _ in range(2):  # the first run warms the server
            grpc_points = [peers.h2load(url, frame, c, args.seconds) for c in (1, 8)]
        return "; ".join(
            f"c={c} {p['rps']:,.0f} calls/s mean {p['mean_ms']:.2f} ms"
            for c, p in zip((1, 8), grpc_points)
        )
    target, body = f"{url}/predict/{args.model}", BODIES[args.model]
    if args.protocol == "v2":
        target, body = f"{url}/v2/models/{args.model}/infer", peers.v2_body(BODIES[args.model])
    warm(target, body)
    points = [wrk(target, body, c, args.seconds) for c in (1, 8)]
    return "; ".join(
        f"c={c} {p['rps']:,.0f} req/s p99 {p['p99_ms']:.2f} ms" for c, p in zip((1, 8), points)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--model", choices=sorted(BODIES), default="iris")
    parser.add_argument(
        "--protocol",
        choices=("native", "v2", "grpc"),
        default="native",
        help="single rows over this",
    )
    parser.add_argument("--rounds", type=int, default=2, help="old/new pairs")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    parser.add_argument("--batch", type=int, default=0, help="rows per housing batch instead")
    parser.add_argument("--explain", type=int, default=0, help="rows per housing explanation")
    args = parser.parse_args()
    rows = args.explain or args.batch
    batch = housing_records(rows) if rows else []
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "-f", "-q", str(base), args.base], check=True)
        try:
            if (base / "setup.py").exists():
                subprocess.run(
                    [sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=base,
                    check=True, stdout=subprocess.DEVNULL,
                )  # fmt: skip
            for _ in range(args.rounds):
                for label, tree in (("base", base), ("this", ROOT)):
                    port, grpc_port = free_port(), free_port()
                    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PREDICT_HOME": str(ROOT),
                           "PREDICT_GRPC_PORT": str(grpc_port)}  # fmt: skip
                    cmd = [sys.executable, str(tree / "run_api.py"), "--port", str(port),
                           "--log-level", "warning"]  # fmt: skip
                    with server(cmd, "/ready", port, env) as s:
                        url = grpc_port if args.protocol == "grpc" else s["url"]
                        print(f"{label}: {measure(url, args, batch)}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()

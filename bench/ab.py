"""Compare this working tree's server with another revision's, in alternating wrk runs.

`python bench/ab.py --base REV [--model iris] [--rounds 2]`. This machine's speed drifts by
10-30 % over minutes, so two `make bench` runs taken apart say little about a small change;
alternating old and new in one script does. REV is checked out into a temporary git worktree
and served with its own source (PYTHONPATH) against this tree's registry (mlruns/, so
`make train` first). Prints req/s and p99 at concurrency 1 and 8 per run. The base tree's
native forest kernel is not built, so a base that has one serves LightGBM without it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import HOUSING, IRIS, ROOT, free_port, server, warm, wrk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--model", choices=["iris", "housing"], default="iris")
    parser.add_argument("--rounds", type=int, default=2, help="old/new pairs")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    args = parser.parse_args()
    body = IRIS if args.model == "iris" else HOUSING
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "-f", "-q", str(base), args.base], check=True)
        try:
            for _ in range(args.rounds):
                for label, tree in (("base", base), ("this", ROOT)):
                    port = free_port()
                    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PREDICT_HOME": str(ROOT)}
                    cmd = [sys.executable, str(tree / "run_api.py"), "--port", str(port),
                           "--log-level", "warning"]  # fmt: skip
                    with server(cmd, "/ready", port, env) as s:
                        url = f"{s['url']}/predict/{args.model}"
                        warm(url, body)
                        points = [wrk(url, body, c, args.seconds) for c in (1, 8)]
                    print(
                        f"{label}: " + "; ".join(
                            f"c={c} {p['rps']:,.0f} req/s p99 {p['p99_ms']:.2f} ms"
                            for c, p in zip((1, 8), points)
                        ),
                        flush=True,
                    )  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()

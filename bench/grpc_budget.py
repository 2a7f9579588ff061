"""Where a gRPC call's time goes: our V2 gRPC lane against V2 REST on the same server, and
against a constant ``grpc.aio`` servicer (the library's own floor), in alternating runs.

`python bench/grpc_budget.py [--model iris] [--rounds 3] [--seconds 8] [--connections 8]`
over the default registry (`make train` first). Prints calls/s for each and the per-call
microseconds that are ours: 1/ours - 1/constant. ``--constant-only`` serves the constant
servicer on a port and waits (for profiling it by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import peers  # noqa: E402
from bench.run import BODIES, ROOT, free_port, log, server, warm, wrk  # noqa: E402


def constant_servicer(port: int, reply: bytes) -> None:
    """A grpc.aio server that answers every ModelInfer with the same bytes."""
    import grpc

    async def infer(body: bytes, context: Any) -> bytes:
        return reply

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(infer)

    async def main() -> None:
        srv = grpc.aio.server(handlers=[Handler()])
        srv.add_insecure_port(f"127.0.0.1:{port}")
        await srv.start()
        await srv.wait_for_termination()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BODIES), default="iris")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--constant-only", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--reply", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.constant_only:
        constant_servicer(args.constant_only, bytes.fromhex(args.reply))
        return
    body = BODIES[args.model]
    frame = peers.grpc_frame(args.model, body, [])
    port, grpc_port, constant_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PREDICT_GRPC_PORT": str(grpc_port)}
    cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
    with server(cmd, "/ready", port, env) as s:
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = channel.unary_unary(peers.INFER_PATH)(frame[5:], timeout=10)
        constant = subprocess.Popen(
            [sys.executable, __file__, "--constant-only", str(constant_port),
             "--reply", reply.hex()], cwd=ROOT,
        )  # fmt: skip
        try:
            time.sleep(2)
            v2_body = {
                "inputs": [{"name": "x", "shape": [1, len(body)], "datatype": "FP64",
                            "data": list(body.values())}]  # fmt: skip
            }
            rest = f"{s['url']}/v2/models/{args.model}/infer"
            warm(rest, v2_body, 300)
            runs: dict[str, list[float]] = {"v2 grpc": [], "v2 rest": [], "constant grpc": []}
            c = args.connections
            for r in range(args.rounds):
                log(f"round {r + 1}")
                runs["v2 grpc"].append(peers.h2load(grpc_port, frame, c, args.seconds)["rps"])
                runs["v2 rest"].append(wrk(rest, v2_body, c, args.seconds)["rps"])
                runs["constant grpc"].append(
                    peers.h2load(constant_port, frame, c, args.seconds)["rps"]
                )
        finally:
            constant.terminate()
            constant.wait()
    rps = {k: median(v) for k, v in runs.items()}
    print(f"{args.model}, c={args.connections}, medians of {args.rounds} alternating runs")
    for k, v in rps.items():
        print(f"  {k:14} {v:8,.0f} calls/s   {1e6 / v:6.0f} us a call   runs {runs[k]}")
    print(f"  ours per gRPC call: {1e6 / rps['v2 grpc'] - 1e6 / rps['constant grpc']:.0f} us")
    print(f"  gRPC / REST: {rps['v2 grpc'] / rps['v2 rest']:.2f}x")


if __name__ == "__main__":
    main()

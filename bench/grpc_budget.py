"""Where a gRPC call's time goes: our V2 gRPC lane against V2 REST on the same server, and
against a constant ``grpc.aio`` servicer (the library's own floor), in alternating runs;
with ``--mlserver``, Seldon MLServer's gRPC on the same champion too.

`python bench/grpc_budget.py [--model iris] [--rounds 3] [--seconds 8] [--connections 8]
[--engine h2|grpcio] [--mlserver]` over the default registry (`make train` first). Prints
calls/s for each and the per-call microseconds that are ours: 1/ours - 1/constant.
``--constant-only`` serves the constant servicer on a port and waits (for profiling it by
hand). With ``--mlserver`` a classifier is asked for ``predict_proba`` only, by every gRPC
lane (MLServer's encoder fails on string class names), as in ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import orjson

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

    if os.environ.get("CONSTANT_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


@contextmanager
def mlserver(wanted: bool) -> Iterator[int | None]:
    """MLServer serving the default registry's champions (its gRPC port), or None."""
    if not wanted:
        yield None
        return
    from prediction_service.settings import Settings

    settings = Settings()
    http, grpc_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-mlserver-") as tmp:
        folder = Path(tmp) / "models"
        peers.export_for_mlserver(
            settings.effective_tracking_uri, settings.artifact_path, folder, http, grpc_port
        )
        with server([*peers.mlserver_command(), "start", str(folder)], "/v2/health/ready",
                    http, dict(os.environ)):  # fmt: skip
            yield grpc_port


def handler_us(model: str, n: int) -> dict[str, float]:
    """In-process microseconds of each stage of a V2 gRPC call (typed FP64 contents, as
    tritonclient's typed form and the bench's h2load frame send), and of whole handlers."""
    from bench.budget import per_call_us
    from prediction_service.core import build_core
    from prediction_service.protocols import native, v2
    from prediction_service.protocols.base import Call, answer_here
    from prediction_service.protocols.v2_grpc import grpc_predict_v2_pb2 as pb
    from prediction_service.protocols.v2_grpc import methods
    from prediction_service.settings import Settings

    core = build_core(Settings())
    core.start()
    try:
        service, body = core.predictions, BODIES[model]
        frame = peers.grpc_frame(model, body, [])[5:]
        request = pb.ModelInferRequest.FromString(frame)
        codec = service.codec(model)
        tensors = [methods._tensor(i, None) for i in request.inputs]
        X = v2.features(codec, tensors)
        p = service.predict(model, X, methods.NAME)
        rest = orjson.dumps({"inputs": [{"name": "x", "shape": [1, len(body)],
                                         "datatype": "FP64", "data": list(body.values())}]})  # fmt: skip
        one = orjson.dumps(body)

        def encode() -> bytes:
            response = pb.ModelInferResponse(model_name=p.model, model_version=p.version)
            for t in v2.outputs(p, None):
                out = response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
                if isinstance(t.values, np.ndarray):
                    out.contents.fp64_contents.extend(t.values.reshape(-1).tolist())
                else:
                    out.contents.bytes_contents.extend(s.encode() for s in t.values)
            return response.SerializeToString()

        return {
            "grpc: parse message": per_call_us(lambda: pb.ModelInferRequest.FromString(frame), n),
            "grpc: tensors to features": per_call_us(
                lambda: v2.features(codec, [methods._tensor(i, None) for i in request.inputs]), n
            ),
            "predict (model, metrics, log enqueue)": per_call_us(
                lambda: service.predict(model, X, methods.NAME), n
            ),
            "grpc: encode response": per_call_us(encode, n),
            "grpc: whole handler": per_call_us(
                lambda: answer_here(methods.model_infer, service, Call({}, frame)), n
            ),
            "v2 rest: whole handler": per_call_us(
                lambda: answer_here(v2.infer, service, Call({"model": model}, rest)), n
            ),
            "native: whole handler": per_call_us(
                lambda: answer_here(native.predict_one, service, Call({"model": model}, one)), n
            ),
        }
    finally:
        core.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BODIES), default="iris")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--engine", choices=("h2", "grpcio"), default="h2",
                        help="PREDICT_GRPC_ENGINE of our server")  # fmt: skip
    parser.add_argument("--mlserver", action="store_true", help="MLServer's gRPC lane too")
    parser.add_argument("--constant-only", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--reply", help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=2000, help="calls per in-process timing round")
    args = parser.parse_args()
    if args.constant_only:
        constant_servicer(args.constant_only, bytes.fromhex(args.reply))
        return
    body = BODIES[args.model]
    # By task, as make bench asks: MLServer's gRPC encoder fails on string class names.
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs

    task = load_specs(Settings().specs_path)[args.model].task
    outputs = ["predict_proba"] if args.mlserver and task == "classification" else []
    frame = peers.grpc_frame(args.model, body, outputs)
    port, grpc_port, constant_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PREDICT_GRPC_PORT": str(grpc_port), "PREDICT_GRPC_ENGINE": args.engine}
    cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
    with server(cmd, "/ready", port, env) as s, mlserver(args.mlserver) as ml_grpc:
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
            if ml_grpc:
                runs["mlserver grpc"] = []
            c = args.connections
            for r in range(args.rounds):
                log(f"round {r + 1}")
                runs["v2 grpc"].append(peers.h2load(grpc_port, frame, c, args.seconds)["rps"])
                runs["v2 rest"].append(wrk(rest, v2_body, c, args.seconds)["rps"])
                runs["constant grpc"].append(
                    peers.h2load(constant_port, frame, c, args.seconds)["rps"]
                )
                if ml_grpc:
                    runs["mlserver grpc"].append(
                        peers.h2load(ml_grpc, frame, c, args.seconds)["rps"]
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
    if "mlserver grpc" in rps:
        print(f"  gRPC / MLServer's gRPC: {rps['v2 grpc'] / rps['mlserver grpc']:.2f}x")
    print("\nin-process, us per call:")
    for stage, us in handler_us(args.model, args.n).items():
        print(f"  {stage:40} {us:6.1f}")


if __name__ == "__main__":
    main()

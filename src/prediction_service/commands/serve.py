"""``prediction-service serve`` (and ``python run_api.py``): serve the API with uvicorn."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import uvicorn

from prediction_service import logs, shortcuts
from prediction_service.settings import Settings


def prepare_multiprocess_metrics(workers: int) -> None:
    """Several workers share their metrics through files; start each run with none left over."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers > 1 and not directory:
        directory = tempfile.mkdtemp(prefix="prediction-service-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def warn_if_open(host: str, settings: Settings) -> None:
    """Serving beyond this machine with no keys for feedback and history: say so, loudly."""
    from prediction_service.access import AccessControl
    from prediction_service.metrics import Metrics

    if host in LOOPBACK:
        return
    control = AccessControl.from_settings(settings, Metrics())
    exposed = [s for s in ("feedback", "read") if control.is_open(s)]
    if exposed:
        print(
            f"WARNING: serving on {host} with the {' and '.join(exposed)} scope(s) open: anyone "
            "who reaches the port can post ground truth (POST /feedback) or read logged inputs "
            "(GET /predictions/history). Configure PREDICT_API_KEYS or PREDICT_API_KEYS_FILE.",
            file=sys.stderr,
            flush=True,
        )


def build_parser(prog: str = "run_api.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve every model's champion over HTTP (our REST protocol, the Open "
        "Inference Protocol and MLflow's /invocations) and, with PREDICT_GRPC_PORT set, over "
        "gRPC. Settings come from PREDICT_* environment variables (docs/reference/settings: every one).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default info)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=None,
        help="on SIGTERM, seconds to let in-flight requests finish (default 10, or "
        "PREDICT_GRACEFUL_TIMEOUT_S); then the prediction log is written out and the process "
        "exits. Work that cannot finish in half of it is refused up front",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "run_api.py") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.graceful_timeout is not None:  # the workers read their settings from the environment
        os.environ["PREDICT_GRACEFUL_TIMEOUT_S"] = str(args.graceful_timeout)
    settings = Settings()
    warn_if_open(args.host, settings)
    prepare_multiprocess_metrics(args.workers)
    shortcuts.configure(settings.shortcuts, settings.max_header_bytes, settings.header_timeout_s)
    uvicorn.run(
        "prediction_service.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=math.ceil(settings.graceful_timeout_s),
        loop="uvloop",
        log_config=logs.config(settings.log_format, args.log_level),
        http=shortcuts.http_protocol(),
        limit_concurrency=settings.max_connections,
    )
    return 0

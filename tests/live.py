"""A real uvicorn process on a free loopback port, for live tests over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from prediction_service.settings import Settings
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    output: Callable[[], str],
    ok: Callable[[int], bool] = lambda status: status == 200,
) -> None:
    """Poll ``url`` until its status is ``ok``; fail with the process's output if it exits
    first (RuntimeError) or ``timeout_s`` passes (TimeoutError)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited early:\n{output()}")
        try:
            if ok(requests.get(url, timeout=2).status_code):
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}: not ready in {timeout_s} s:\n{output()}")


class LiveServer:
    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        workers: int = 1,
        args: tuple[str, ...] = ("--log-level", "warning"),
        **env: str,
    ) -> None:
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **settings.child_env(), **env}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0, want_ready: bool = True) -> LiveServer:
        return self.spawn().wait_ready(timeout_s, want_ready)

    def spawn(self) -> LiveServer:
        """Start the process and return at once (``wait_ready`` waits for it)."""
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "run_api.py", "--port", str(self.port), *self.args]
            + ["--workers", str(self.workers)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes job children too
        )
        return self

    def wait_ready(self, timeout_s: float = 90.0, want_ready: bool = True) -> LiveServer:
        assert self.proc is not None
        try:
            wait_for_http(f"{self.url}/ready", self.proc, timeout_s, self.output,
                          lambda status: status == 200 or (not want_ready and status == 503))  # fmt: skip
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, the way an orchestrator stops it; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=60, **kw)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, value = line.rsplit(" ", 1)
            metric_name = head.split("{", 1)[0]
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

"""The image, built and run as users run it (`make image-test`): with Docker where an engine
runs, else podman (on the CI machine, over a local stand-in for the Python base image when
no registry serves it: the build says so). Fresh volumes, /ready, a prediction on each model
over HTTP and gRPC, a non-root user, the healthcheck, SIGTERM answered with a clean exit
and every acknowledged row in the log, and an unwritable log volume refused at start."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc

from tests.conftest import HOUSING_RECORD, IN_CI, IRIS_RECORD, ROOT
from tests.live import free_port

pytestmark = pytest.mark.integration
# An image built beforehand (the GitHub workflow's, with its layer cache), or one built here.
IMAGE = os.environ.get("IMAGE_UNDER_TEST", "prediction-service:image-test")


def engine() -> str:
    """podman (the CI machine's), or docker with a running engine."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    ):
        return "docker"
    if shutil.which("podman"):
        return "podman"
    message = "no container engine: apt-get install podman runc debootstrap (.ci/run does)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[str, dict[str, str]]]:
    tool = engine()
    started = time.monotonic()
    env = dict(os.environ)
    if "IMAGE_UNDER_TEST" not in os.environ:
        out = subprocess.run([str(ROOT / "deploy" / "image" / "build.sh"), IMAGE, "--train"],
                             capture_output=True, text=True, timeout=3000)  # fmt: skip
        said = [line for line in (out.stdout + out.stderr).splitlines()
                if line.startswith(("build.sh:", "standin-base.sh:"))]  # fmt: skip
        print("\n".join(said))  # says whether the base is a local stand-in
        assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
        conf = next((line.split("=", 1)[1] for line in out.stdout.splitlines()
                     if line.startswith("CONTAINERS_CONF=")), None)  # fmt: skip
        if conf:
            env["CONTAINERS_CONF"] = conf
    size = subprocess.run([tool, "image", "inspect", "--format", "{{.Size}}", IMAGE], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    print(f"image {IMAGE}: built in {time.monotonic() - started:.0f} s, "
          f"{int(size) / 1e6:.0f} MB")  # fmt: skip
    yield tool, env


def run(built: tuple[str, dict[str, str]], *args: str, check: bool = True) -> str:
    tool, env = built
    out = subprocess.run([tool, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, f"{tool} {' '.join(args)}: {out.stderr[-3000:]}"
    return out.stdout.strip()


def start(built: tuple[str, dict[str, str]], name: str, logs: str) -> tuple[int, int]:
    """The image on the host's network (ports of their own), with ``logs`` at /app/logs."""
    port, grpc_port = free_port(), free_port()
    run(built, "run", "-d", "--name", name, "--network", "host",
        "-e", f"PORT={port}", "-e", f"PREDICT_GRPC_PORT={grpc_port}", "-e", "WORKERS=1",
        "-v", f"{logs}:/app/logs", IMAGE)  # fmt: skip
    return port, grpc_port


def test_the_image_serves_logs_and_stops_cleanly(
    built: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    name, volume = f"image-test-{os.getpid()}", f"image-test-logs-{os.getpid()}"
    started = time.monotonic()
    port, grpc_port = start(built, name, volume)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, run(built, "logs", name)
            time.sleep(0.2)
        print(f"cold start, run to /ready: {time.monotonic() - started:.1f} s")
        ids = []
        for model, record in (("iris", IRIS_RECORD), ("housing", HOUSING_RECORD)):
            r = requests.post(f"{url}/predict/{model}", json=record, timeout=10)
            assert r.status_code == 200, r.text
            ids.append(r.json()["prediction_id"])
            client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            tensor = triton_grpc.InferInput("input-0", [1, len(record)], "FP64")
            tensor.set_data_from_numpy(np.array([list(record.values())], dtype=np.float64))
            result = client.infer(model, [tensor])
            ids.append(result.as_numpy("prediction_id")[0].decode())
        assert run(built, "exec", name, "id", "-u") != "0"
        if built[0] == "podman":
            run(built, "healthcheck", "run", name)  # exit 0: healthy
        else:
            time.sleep(20)
            assert run(built, "inspect", "--format", "{{.State.Health.Status}}", name) == "healthy"

        run(built, "stop", "-t", "30", name)  # SIGTERM, then SIGKILL after 30 s
        assert run(built, "inspect", "--format", "{{.State.ExitCode}}", name) == "0"
        logs_path = Path(run(built, "volume", "inspect", "--format", "{{.Mountpoint}}", volume))
        with sqlite3.connect(logs_path / "predictions.db") as conn:
            logged = {r[0] for r in conn.execute("SELECT id FROM predictions")}
        assert set(ids) <= logged, "acknowledged predictions missing from the log"
    finally:
        run(built, "rm", "-f", name, check=False)
        run(built, "volume", "rm", "-f", volume, check=False)


def test_an_unwritable_log_volume_is_refused_at_start(
    built: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    root_owned = tmp_path / "logs"
    root_owned.mkdir()
    os.chmod(root_owned, 0o755)  # root's, as a bind mount made by root is
    name = f"image-test-ro-{os.getpid()}"
    start(built, name, str(root_owned))
    try:
        deadline = time.monotonic() + 60
        while run(built, "inspect", "--format", "{{.State.Running}}", name) == "true":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert run(built, "inspect", "--format", "{{.State.ExitCode}}", name) == "78"
        logs = subprocess.run([built[0], "logs", name], env=built[1], capture_output=True,
                              text=True).stderr  # fmt: skip
        assert "/app/logs is not writable by uid 10001" in logs, logs
    finally:
        run(built, "rm", "-f", name, check=False)

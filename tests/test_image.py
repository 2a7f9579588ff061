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
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import yaml

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


def monitoring_images(built: tuple[str, dict[str, str]], compose_file: dict[str, Any]) -> None:
    """The compose file's Prometheus and Alertmanager images: there, pulled, or (podman, where
    no registry serves them) local stand-ins from Debian's packages under the same names."""
    tool, env = built
    names = [compose_file["services"][s]["image"] for s in ("prometheus", "alertmanager")]
    names = [n if "." in n.split("/", 1)[0] else f"docker.io/{n}" for n in names]

    def present(name: str) -> bool:
        return subprocess.run([tool, "image", "inspect", name], env=env,
                              capture_output=True).returncode == 0  # fmt: skip

    for name in names:
        if not present(name):
            subprocess.run([tool, "pull", "-q", name], env=env, capture_output=True, timeout=180)
    if all(present(name) for name in names):
        return
    if tool == "docker":
        pytest.fail(f"{names} cannot be pulled")
    base = next(line.split("=", 1)[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
                if line.startswith("ARG PYTHON_IMAGE="))  # fmt: skip
    out = subprocess.run([str(ROOT / "deploy" / "image" / "standin-monitoring.sh"),
                          f"docker.io/library/{base}", *names], env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    print("\n".join(line for line in out.stderr.splitlines() if "STAND-IN" in line))


def compose_command(tool: str) -> list[str]:
    """docker-compose (Debian's, as .ci/run installs it), or Docker's compose plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if tool == "docker" and subprocess.run(["docker", "compose", "version"],
                                           capture_output=True).returncode == 0:  # fmt: skip
        return ["docker", "compose"]
    message = "docker-compose is missing: apt-get install docker-compose (.ci/run does)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def docker_api(built: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment compose needs: Docker's own, or podman's Docker-compatible API served
    from a socket for the test."""
    tool, env = built
    if tool == "docker":
        yield dict(env)
        return
    socket = tmp_path / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert service.poll() is None and time.monotonic() < deadline, "podman service"
            time.sleep(0.1)
        yield {**env, "DOCKER_HOST": f"unix://{socket}"}
    finally:
        service.terminate()
        service.wait(30)


def test_the_compose_stack_comes_up_healthy_and_is_scraped(
    built: tuple[str, dict[str, str]], docker_api: dict[str, str]
) -> None:
    """api, prometheus and alertmanager from docker-compose.yml as it is (Grafana cannot run
    on the CI machine; its provisioning is checked by test_monitoring_config.py): all three
    healthy, Prometheus scraping the API with every rule loaded and Alertmanager found."""
    compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    monitoring_images(built, compose_file)
    prometheus_port = free_port()
    project = f"composetest{os.getpid()}"
    env = {**docker_api, "API_IMAGE": IMAGE, "API_PORT": str(free_port()),
           "API_GRPC_PORT": str(free_port()), "PROMETHEUS_PORT": str(prometheus_port),
           "ALERTMANAGER_PORT": str(free_port()), "GRAFANA_ADMIN_PASSWORD": "unused-here"}  # fmt: skip

    command = [*compose_command(built[0]), "-p", project, "-f", "docker-compose.yml"]

    def compose(*args: str) -> str:
        out = subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        assert out.returncode == 0, f"compose {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    services = ("api", "prometheus", "alertmanager")
    started = time.monotonic()
    timeline = []
    try:
        compose("up", "-d", "--no-build", *services)
        timeline.append(f"compose up returned: {time.monotonic() - started:.1f} s")
        ids = compose("ps", "-q").split()
        assert len(ids) == 3, ids
        deadline = time.monotonic() + 240
        healthy: set[str] = set()
        while len(healthy) < 3:
            assert time.monotonic() < deadline, compose("ps") + compose("logs", "--tail", "40")
            for cid in set(ids) - healthy:
                status = run(built, "inspect", "--format", "{{.State.Health.Status}}", cid)
                if status == "healthy":
                    healthy.add(cid)
                    name = run(built, "inspect", "--format", "{{.Name}}", cid)
                    timeline.append(f"{name} healthy: {time.monotonic() - started:.1f} s")
                elif built[0] == "podman":
                    # The engine runs the check on its interval through systemd timers, which
                    # this machine has not: run it as the timer would.
                    run(built, "healthcheck", "run", cid, check=False)
            time.sleep(1)
        ps = compose("ps")
        print(ps)
        assert sum("(healthy)" in line for line in ps.splitlines()) == 3, ps

        prometheus = f"http://127.0.0.1:{prometheus_port}"
        deadline = time.monotonic() + 60
        while True:
            targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
            api = [t for t in targets["activeTargets"] if t["labels"]["job"] == "prediction-api"]
            if api and api[0]["health"] == "up":
                break
            assert time.monotonic() < deadline, targets
            time.sleep(1)
        timeline.append(f"Prometheus scraped the API: {time.monotonic() - started:.1f} s")
        for t in targets["activeTargets"]:
            print(f"target {t['labels']['job']:<16} {t['scrapeUrl']:<34} {t['health']}"
                  f"  last scrape {t['lastScrapeDuration'] * 1000:.1f} ms {t['lastError']}")  # fmt: skip
        declared = {r.get("alert") or r.get("record")
                    for f in (ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml")
                    for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]}  # fmt: skip
        groups = requests.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = {r["name"] for g in groups for r in g["rules"]}
        assert loaded == declared
        assert not [r["name"] for g in groups for r in g["rules"] if r["health"] == "err"]
        print(f"rules: {len(loaded)} loaded in {len(groups)} groups, none in error")
        managers = requests.get(f"{prometheus}/api/v1/alertmanagers", timeout=5).json()
        assert [a["url"] for a in managers["data"]["activeAlertmanagers"]] == [
            "http://alertmanager:9093/api/v2/alerts"
        ]
        print("compose timeline: " + "; ".join(timeline))
    finally:
        subprocess.run([*command, "down", "-v"], cwd=ROOT, env=env, capture_output=True,
                       timeout=300)  # fmt: skip

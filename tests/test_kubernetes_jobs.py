"""The Kubernetes retrain backend against a stand-in for the Kubernetes API server.

The API server is the one boundary we cannot run here, so a small local HTTP server plays
it: it serves the retrain template CronJob exactly as the shipped manifest has it, records
the Job the backend creates, and "schedules" it by running the Job's container command on
this machine (with the stores a Secret would provide), then reports the Job's status as the
Job controller would. Everything else is real: the official client, the runner, the
training process writing its outcome to the job's row, the MLflow store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from kubernetes import client

from prediction_service.core import build_core
from prediction_service.domain import RetrainJob
from prediction_service.metrics import Metrics
from prediction_service.registry import Registry
from prediction_service.serving.kubernetes import JOB_ID_LABEL, KubernetesLauncher
from prediction_service.serving.retrain import RetrainRunner
from prediction_service.settings import Settings
from prediction_service.storage.db import make_engine, migrate
from prediction_service.storage.jobs import JobStore
from tests.conftest import ROOT, registry_copy, small_settings
from tests.live import free_port, wait_for_http

pytestmark = pytest.mark.integration

Small = tuple[Settings, dict[str, Any]]
NAMESPACE = "ml"
TEMPLATE = yaml.safe_load((ROOT / "deploy/kubernetes/base/retrain-template.yaml").read_text())


class FakeCluster:
    """Just enough of the Kubernetes API for the backend: one CronJob, Jobs, Job status."""

    def __init__(self, env: dict[str, str], fail_with: str | None = None) -> None:
        self.env = env
        self.logs = Path(tempfile.mkdtemp(prefix="fake-pods-"))
        self.fail_with = fail_with  # report the Job failed with this reason, never run it
        self.jobs: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_client(self) -> client.ApiClient:
        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

    def run(self, job: dict[str, Any]) -> None:
        """What a node would do: run the Job's container command with the pod's environment."""
        container = job["spec"]["template"]["spec"]["containers"][0]
        command = container["command"] + container["args"]
        assert command[0] == "prediction-service"
        env = {**self.env, **{e["name"]: e["value"] for e in container.get("env", [])}}
        name = job["metadata"]["name"]
        with self.output(name).open("wb") as out:  # the pod's log
            self.procs[name] = subprocess.Popen(  # noqa: S603 - the test's own interpreter
                [sys.executable, "-m", "prediction_service", *command[1:]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def output(self, job: str) -> Path:
        return self.logs / f"{job}.log"

    def status(self, name: str) -> dict[str, Any]:
        if self.fail_with:
            return {
                "failed": 1,
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": self.fail_with,
                     "message": "Job has reached the specified backoff limit"},
                ],
            }  # fmt: skip
        code = self.procs[name].poll()
        if code is None:
            return {"active": 1}
        if code == 0:
            return {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        return {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                             "reason": "BackoffLimitExceeded"}]}  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cluster = self
        base = f"/apis/batch/v1/namespaces/{NAMESPACE}"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                cluster.requests.append(("GET", self.path))
                name = self.path.rsplit("/", 2)
                path, _, query = self.path.partition("?")
                pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
                if path == pods:  # one pod per Job, named after it, as the Job controller does
                    job = parse_qs(query)["labelSelector"][0].removeprefix("job-name=")
                    items = [{"metadata": {"name": f"{job}-pod", "creationTimestamp": "t"}}]
                    self.reply(
                        200, {"kind": "PodList", "items": items if job in cluster.procs else []}
                    )
                elif path.startswith(pods + "/") and path.endswith("-pod/log"):
                    text = cluster.output(path.split("/")[-2].removesuffix("-pod")).read_bytes()
                    lines = int(parse_qs(query)["tailLines"][0])
                    self.send_response(200)
                    body = b"".join(text.splitlines(keepends=True)[-lines:])
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == f"{base}/cronjobs/{TEMPLATE['metadata']['name']}":
                    self.reply(200, TEMPLATE)
                elif self.path.startswith(f"{base}/jobs/") and self.path.endswith("/status"):
                    job = cluster.jobs.get(name[-2])
                    if job is None:
                        self.reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    else:
                        self.reply(200, {**job, "status": cluster.status(name[-2])})
                else:
                    self.reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

            def do_POST(self) -> None:  # noqa: N802
                cluster.requests.append(("POST", self.path))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != f"{base}/jobs":
                    self.reply(404, {"kind": "Status", "code": 404})
                    return
                cluster.jobs[body["metadata"]["name"]] = body
                if not cluster.fail_with:
                    cluster.run(body)
                self.reply(201, {**body, "metadata": {**body["metadata"], "uid": "u-1"}})

        return Handler

    def __enter__(self) -> FakeCluster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def pod_env(settings: Settings) -> dict[str, str]:
    """The environment the pod would get from the ConfigMap and the stores Secret."""
    return {**os.environ, **settings.child_env(), "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture()
def k8s_settings(small: Small, tmp_path: Path) -> Settings:
    """The small models' registry, copied: these tests promote new champions, which the
    other tests of the session must not see."""
    return small_settings(small, tmp_path, tracking_uri=registry_copy(small, tmp_path),
                          retrain_backend="kubernetes", k8s_poll_s=0.1)  # fmt: skip


def make_runner(settings: Settings, cluster: FakeCluster) -> RetrainRunner:
    """A service's runner with the Kubernetes launcher pointed at the stand-in cluster."""
    core = build_core(settings.model_copy(update={"retrain_backend": "process"}))
    launcher = KubernetesLauncher(cluster.api_client(), NAMESPACE, TEMPLATE["metadata"]["name"],
                                  settings.k8s_poll_s)  # fmt: skip
    runner = RetrainRunner(
        settings, core.retrain.jobs, core.lifecycle, Metrics(), launcher=launcher
    )
    migrate(core.engine)
    core.lifecycle.sync_all()
    return runner


def wait_for(runner: RetrainRunner, job_id: str, timeout_s: float = 120.0) -> RetrainJob:
    deadline = time.monotonic() + timeout_s
    while (job := runner.get(job_id)).active:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.fixture()
def cluster(k8s_settings: Settings) -> Iterator[FakeCluster]:
    with FakeCluster(pod_env(k8s_settings)) as fake:
        yield fake


def test_a_retrain_becomes_a_job_from_the_template_and_its_outcome_is_recorded(
    k8s_settings: Settings, cluster: FakeCluster
) -> None:
    runner = make_runner(k8s_settings, cluster)
    registry = Registry(k8s_settings.effective_tracking_uri, k8s_settings.artifact_path)
    before = registry.champion_version("IrisBestModel")
    job = runner.start("iris", ["logistic_regression"], None)
    assert job.status == "queued"
    done = wait_for(runner, job.id)

    (created,) = cluster.jobs.values()
    print("the Job the runner created:\n" + yaml.safe_dump(created, sort_keys=False))
    template = TEMPLATE["spec"]["jobTemplate"]
    assert created["metadata"]["name"] == f"prediction-service-retrain-{job.id[:16]}"
    assert created["metadata"]["namespace"] == NAMESPACE
    assert created["metadata"]["labels"][JOB_ID_LABEL] == job.id
    assert created["spec"]["template"]["metadata"]["labels"][JOB_ID_LABEL] == job.id
    assert created["metadata"]["annotations"]["prediction-service/model"] == "iris"
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["train", "iris", "--job-id", job.id,
                                 "--candidates", "logistic_regression"]  # fmt: skip
    # Everything else is the template's, untouched: image, env, Secrets, limits, security.
    expected = template["spec"]["template"]["spec"]["containers"][0]
    assert {k: v for k, v in container.items() if k != "args"} == {
        k: v for k, v in expected.items() if k != "args"
    }
    assert created["spec"]["backoffLimit"] == template["spec"]["backoffLimit"] == 0
    assert created["spec"]["template"]["spec"]["serviceAccountName"] == "prediction-service-train"

    assert done.status == "succeeded", done
    assert done.version is not None and done.version != before
    assert done.metrics["test_accuracy"] > 0.8
    assert done.promoted is True  # the small specs' gate has no tolerance to miss
    assert registry.champion_version("IrisBestModel") == done.version
    # The runner served the new champion before it said "succeeded".
    served = runner.lifecycle.store.loaded("iris")
    assert served is not None and served.version == done.version
    assert ("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/prediction-service-retrain") \
        in cluster.requests  # fmt: skip
    # The pod's output became the job's log, as a local job's is.
    saved = runner.log_path(job.id).read_text()
    assert (
        "[iris] logistic_regression" in saved
        and saved == cluster.output(created["metadata"]["name"]).read_text()
    )
    runner.shutdown()


def test_a_failed_job_is_reported_with_the_clusters_reason(
    k8s_settings: Settings, tmp_path: Path
) -> None:
    with FakeCluster(pod_env(k8s_settings), fail_with="DeadlineExceeded") as cluster:
        runner = make_runner(k8s_settings, cluster)
        job = runner.start("housing", None, None)
        done = wait_for(runner, job.id, 30)
    assert done.status == "failed"
    assert done.error == (
        f"Kubernetes Job prediction-service-retrain-{job.id[:16]} failed: "
        "DeadlineExceeded: Job has reached the specified backoff limit"
    )
    assert done.version is None


def test_jobs_outlive_the_pod_that_started_them(
    k8s_settings: Settings, cluster: FakeCluster
) -> None:
    """A pod stopping leaves the Job running and its row open; the next pod watches it."""
    first = make_runner(k8s_settings, cluster)
    job = first.start("iris", ["logistic_regression"], None)
    while not cluster.procs:
        time.sleep(0.05)
    first.shutdown()
    stored = JobStore(make_engine(k8s_settings.effective_database_url)).get(job.id)
    assert stored is not None and stored.status == "running"
    assert next(iter(cluster.procs.values())).poll() is None  # still training

    second = make_runner(k8s_settings, cluster)
    assert second.recover() == 0  # nothing marked interrupted: it is watched again
    assert (second.get(job.id).progress or "").startswith(
        f"running as Kubernetes Job {NAMESPACE}/prediction-service-retrain-"
    )
    done = wait_for(second, job.id)
    assert done.status == "succeeded", done
    assert len(cluster.jobs) == 1  # not started twice
    second.shutdown()


def test_the_kubernetes_backend_needs_a_cluster(tmp_path: Path, small: Small) -> None:
    settings = small_settings(small, tmp_path, retrain_backend="kubernetes")
    from prediction_service.errors import ServiceError

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env | {"KUBECONFIG": str(tmp_path / "missing")})
    try:
        with pytest.raises(ServiceError, match="no cluster configuration was found"):
            build_core(settings)
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture()
def tracking_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real MLflow tracking server storing (and serving) the artifacts, as in production."""
    port = free_port()
    folder = tmp_path / "tracking-server"
    folder.mkdir()
    proc = subprocess.Popen(  # noqa: S603 - the test's own interpreter
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "tracking-server.log").open("wb"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, 90,
                      lambda: (tmp_path / "tracking-server.log").read_text()[-3000:])  # fmt: skip
        yield url, folder / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_a_job_pod_trains_against_a_tracking_server_with_no_shared_disk(
    small: Small, tmp_path: Path, tracking_server: tuple[str, Path]
) -> None:
    """The pods share only the tracking server and the database: the Job's model artifacts
    go to the server, and the API pod loads the new champion from there."""
    url, server_artifacts = tracking_server
    api_disk = tmp_path / "api-disk"
    settings = small_settings(small, tmp_path, tracking_uri=url, artifact_root=api_disk,
                              retrain_backend="kubernetes", k8s_poll_s=0.1)  # fmt: skip
    pod_disk = tmp_path / "pod-disk"
    env = pod_env(settings) | {"PREDICT_ARTIFACT_ROOT": str(pod_disk)}
    with FakeCluster(env) as cluster:
        runner = make_runner(settings, cluster)
        assert Registry(url, api_disk).champion_version("IrisBestModel") is None  # a new server
        job = runner.start("iris", ["logistic_regression"], None)
        done = wait_for(runner, job.id)
        assert done.status == "succeeded", done
        assert done.promoted is True
        served = runner.lifecycle.store.loaded("iris")
        assert served is not None and served.version == done.version
        runner.shutdown()
    stored = [p.name for p in server_artifacts.rglob("*") if p.is_file()]
    assert "MLmodel" in stored, stored
    assert not pod_disk.exists() and not api_disk.exists()

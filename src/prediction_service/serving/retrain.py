"""Retrain jobs: the training command, launched by a backend and watched by a thread.

The backend is a child process of this service (the default) or a Kubernetes Job
(``PREDICT_RETRAIN_BACKEND=kubernetes``, :mod:`prediction_service.serving.kubernetes`). Either
way the training process writes its outcome to the job's row itself (``train --job-id``), and
the runner's thread sets the job's status when the process ends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess  # nosec B404 - runs our own training module, never a shell
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError

from prediction_service import tracing
from prediction_service.domain import RetrainJob
from prediction_service.errors import ConflictError, InvalidInputError, NotFoundError
from prediction_service.metrics import Metrics
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.settings import Settings
from prediction_service.specs import select_candidates
from prediction_service.storage.jobs import JobStore

log = logging.getLogger(__name__)

INTERRUPTED = "the service stopped while this job was queued or running"
NO_OUTCOME = "training ended without recording an outcome; see log_tail"


class Launcher(Protocol):
    """Where training runs. ``launch`` starts it; ``wait`` blocks until it ends."""

    #: Jobs outlive this process (a cluster runs them): at start-up, watch the unfinished
    #: ones again instead of marking them interrupted; at shutdown, leave them running.
    detached: bool

    def launch(self, job_id: str, args: list[str], log_file: Path) -> None: ...

    def wait(self, job_id: str, log_file: Path) -> str | None:
        """None when training ran to its end (it recorded its outcome), else why it did not.
        The training output is in ``log_file`` by then, as far as the backend can tell."""

    def progress(self, job_id: str) -> str | None:
        """A line saying where the job is, when the log file cannot."""

    def stop(self) -> None:
        """The service is stopping: stop waiting (and local children)."""


class ProcessLauncher:
    """Training as a child process of this service: ``python -m prediction_service train``."""

    detached = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(self, job_id: str, args: list[str], log_file: Path) -> None:
        with log_file.open("wb") as out:
            self._procs[job_id] = subprocess.Popen(  # nosec B603 - our interpreter, no shell
                [sys.executable, "-m", "prediction_service", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.settings.child_env(), **tracing.child_env()},
                cwd=self.settings.home,
            )

    def wait(self, job_id: str, log_file: Path) -> str | None:
        proc = self._procs[job_id]  # writing log_file since launch
        try:
            code = proc.wait()
        finally:
            self._procs.pop(job_id, None)
        # With --job-id the command exits 0 whenever it recorded an outcome, promoted or not.
        return None if code == 0 else f"training exited with code {code}; see log_tail"

    def progress(self, job_id: str) -> str | None:
        return None

    def stop(self) -> None:
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                proc.terminate()


def _message(line: str) -> str:
    """A job's output line as text: a JSON log line (PREDICT_LOG_FORMAT=json) by its message."""
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("message", line))
        except (ValueError, AttributeError):
            return line
    return line


# A worker renews its jobs' heartbeat this often; three missed beats mean it is gone.
HEARTBEAT_S = 10.0


def _gone(owner: str | None, beat: float | None, now: float) -> bool:
    """Whether the worker that owns a job no longer watches it: no owner recorded (an older
    service), a process of this host that has exited, or no heartbeat for three periods."""
    if owner is None or beat is None:
        return True
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it exists, under another user
    return now - beat > 3 * HEARTBEAT_S


def make_launcher(settings: Settings) -> Launcher:
    if settings.retrain_backend == "kubernetes":
        from prediction_service.serving.kubernetes import KubernetesLauncher

        return KubernetesLauncher.from_settings(settings)
    return ProcessLauncher(settings)


def resolve_data_path(data_dir: Path, raw: str) -> Path:
    """A CSV inside ``data_dir``; absolute paths, ``..`` and symlinks leading out are refused."""
    if not raw or "\x00" in raw:
        raise InvalidInputError("data_path: must be a non-empty path relative to data/")
    given = Path(raw)
    if given.is_absolute():
        raise InvalidInputError(f"data_path: {raw!r} must be relative to data/, not absolute")
    root = data_dir.resolve()
    resolved = (root / given).resolve()
    if not resolved.is_relative_to(root):
        raise InvalidInputError(f"data_path: {raw!r} resolves outside data/")
    if not resolved.is_file():
        raise InvalidInputError(f"data_path: {raw!r} is not a file in data/")
    return resolved


class RetrainRunner:
    """Starts retrain jobs, at most one per model, and records how each ends.

    Nothing here needs an event loop: the web layer calls ``start`` from a worker thread,
    and so can anything else (the command line, a scheduler).
    """

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        lifecycle: ModelLifecycle,
        metrics: Metrics,
        launcher: Launcher | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.launcher = launcher or make_launcher(settings)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}  # model -> running job
        self._stopping = False
        self.owner = f"{socket.gethostname()}:{os.getpid()}"  # what the job rows call us

    def recover(self) -> int:
        """Unfinished jobs nobody watches any more: watched again when the backend runs them
        on its own (a cluster); else, when their worker is gone, marked interrupted. Returns
        how many were marked. Runs at start-up and with every heartbeat, so the jobs of a
        worker or replica that died are found by the others."""
        if not self.launcher.detached:
            now = time.time()
            orphans = [
                job_id
                for job_id, owner, beat in self.jobs.unfinished()
                if owner != self.owner and _gone(owner, beat, now)
            ]
            return self.jobs.fail_interrupted(INTERRUPTED, orphans)
        for job in self.jobs.list(limit=1000):
            if job.active and job.model not in self._threads:
                self._watch(job.id, job.model, None)
        return 0

    def heartbeat(self) -> None:
        """Say this worker still watches its jobs; mark the jobs of workers that are gone."""
        if self.launcher.detached:
            return  # a cluster runs them; every replica watches them again at start-up
        self.jobs.heartbeat(self.owner)
        marked = self.recover()
        if marked:
            log.warning("marked %d retrain job(s) of a worker that is gone as failed", marked)

    def job_dir(self) -> Path:
        path = self.settings.logs_path / "retrain"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, job_id: str) -> Path:
        """The training output of one job (written by the process, or copied from the pod)."""
        return self.job_dir() / f"{job_id}.log"

    def start(
        self,
        model: str,
        candidates: list[str] | None,
        data_path: str | None,
        reason: str = "requested through POST /retrain",
        trigger: str = "manual",
    ) -> RetrainJob:
        """Start a job; ConflictError while one of ``model`` runs anywhere (the database's
        unique index on active jobs decides between workers and replicas)."""
        spec = self.lifecycle.store.spec(model)
        if candidates is not None:
            select_candidates(spec, tuple(candidates))
        data = None if data_path is None else resolve_data_path(self.settings.data_path, data_path)
        with self._lock:
            if self._stopping:
                raise ConflictError("the service is shutting down; no new retrain jobs")
            running = self._threads.get(model)
            active = self.jobs.active(model)
            if (running and running.is_alive()) or active:
                job_id = active.id if active else "?"
                raise ConflictError(f"a retrain of {model!r} is already running (job {job_id})")
            job_id = uuid.uuid4().hex
            try:
                job = self.jobs.create(
                    job_id, model, candidates, str(data) if data else None, self.owner
                )
            except IntegrityError:  # another worker or replica started one a moment ago
                raise ConflictError(f"a retrain of {model!r} is already running") from None
            # Before the job runs, so its end is never recorded before its start.
            self.lifecycle.events.record(
                model, "retrain_triggered", reason, None, {"job_id": job_id, "trigger": trigger}
            )
            args = ["train", model, "--job-id", job_id]
            if candidates:
                args += ["--candidates", ",".join(candidates)]
            if data:
                args += ["--data", str(data)]
            self._watch(job_id, model, args, tracing.traceparent())
        return job

    def get(self, job_id: str) -> RetrainJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no retrain job {job_id!r}")
        log_file = self.log_path(job_id)
        if log_file.exists():
            lines = [_message(ln) for ln in log_file.read_text(errors="replace").splitlines()]
            # Where a running job is; a finished one says how it ended in its status.
            progress = next((ln for ln in reversed(lines) if ln.startswith("[")), None)
            tail = lines[-20:] if job.status == "failed" else None
            return job.model_copy(
                update={"progress": progress if job.active else None, "log_tail": tail}
            )
        if job.active:
            return job.model_copy(update={"progress": self.launcher.progress(job_id)})
        return job

    def _watch(
        self, job_id: str, model: str, args: list[str] | None, parent: str | None = None
    ) -> None:
        """A thread that launches the job (unless ``args`` is None: it runs already) and
        waits for it to end, in a span continuing ``parent`` (the starting request's trace)."""
        thread = threading.Thread(
            target=self._run, args=(job_id, model, args, parent), name=f"retrain-{model}",
            daemon=True,
        )  # fmt: skip
        self._threads[model] = thread
        thread.start()

    def _run(
        self, job_id: str, model: str, args: list[str] | None, parent: str | None = None
    ) -> None:
        attributes = {"model.name": model, "retrain.job_id": job_id}
        with tracing.span("retrain", attributes, parent=parent):
            self._run_traced(job_id, model, args)

    def _run_traced(self, job_id: str, model: str, args: list[str] | None) -> None:
        started = time.monotonic()
        self.metrics.retrain_in_progress.labels(model).set(1)
        error: str | None = None
        try:
            if args is not None:
                self.jobs.mark_running(job_id)
                self.launcher.launch(job_id, args, self.log_path(job_id))
            error = self.launcher.wait(job_id, self.log_path(job_id))
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            error = f"{type(exc).__name__}: {exc}"
            log.exception("retrain job %s failed", job_id)
        finally:
            self.metrics.retrain_in_progress.labels(model).set(0)
            if not (self._stopping and self.launcher.detached):  # else it runs on
                self._finish(job_id, model, error, time.monotonic() - started)

    def _finish(self, job_id: str, model: str, error: str | None, seconds: float) -> None:
        status, ended = "failed", True
        try:
            job = self.jobs.get(job_id)
            if self._stopping and not self.launcher.detached:
                error = INTERRUPTED
            elif error is None and job and job.version is not None and not job.error:
                status = "succeeded"
                if job.promoted:
                    # Serve the new champion now, not at the next poll, and before the job
                    # says it succeeded: a client that saw "succeeded" gets the new version
                    # (from the other workers within their traffic interval).
                    self.lifecycle.serve_new_champion(model)
            else:
                error = (job.error if job else None) or error or NO_OUTCOME
            error = None if status == "succeeded" else error
            ended = self.jobs.finish(job_id, status, error, unless=INTERRUPTED)
            if ended and job:  # else another replica watching the same cluster Job ended it
                self._record(job, status, error, seconds)
        except Exception:  # noqa: BLE001 - the next start marks it interrupted
            log.exception("could not record the end of retrain job %s", job_id)
        finally:
            if ended:
                self.metrics.retrain_runs.labels(model, status).inc()
                self.metrics.retrain_duration.labels(model).observe(seconds)

    def _record(self, job: RetrainJob, status: str, error: str | None, seconds: float) -> None:
        """The job's end as events: how it ended, and a promotion the gate made."""
        events, model, version = self.lifecycle.events, job.model, job.version
        details: dict[str, Any] = {"job_id": job.id, "seconds": round(seconds, 1)}
        if status != "succeeded":
            events.record(model, "retrain_failed", str(error), version, details)
            return
        details["metrics"] = job.metrics
        gate = job.gate_reason
        if job.promoted:
            events.record(model, "retrain_succeeded", f"version {version} registered", version,
                          details)  # fmt: skip
            events.record(model, "promoted", f"the quality gate: {gate}", version, details)
        else:
            reason = f"version {version} registered, not champion: {gate}"
            events.record(model, "retrain_succeeded", reason, version, details)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop watching; local jobs are stopped (recorded as interrupted), cluster Jobs go on."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads.values())
        self.launcher.stop()
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

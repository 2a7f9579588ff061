"""Retrain jobs: the training CLI in a child process, watched by a thread."""

from __future__ import annotations

import json
import logging
import os
import subprocess  # nosec B404 - runs our own training module, never a shell
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prediction_service.errors import ConflictError, InvalidInputError, NotFoundError
from prediction_service.metrics import Metrics
from prediction_service.serving.lifecycle import ModelLifecycle
from prediction_service.settings import Settings
from prediction_service.specs import select_candidates
from prediction_service.storage.jobs import JobStore

log = logging.getLogger(__name__)

INTERRUPTED = "the service stopped while this job was queued or running"


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
    """Runs the training CLI in a child process per job; a thread per job waits for it.

    Nothing here needs an event loop: the web layer calls ``start`` from a worker thread,
    and so can anything else (the command line, a scheduler).
    """

    def __init__(
        self, settings: Settings, jobs: JobStore, lifecycle: ModelLifecycle, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.lifecycle = lifecycle
        self.metrics = metrics
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}  # model -> running job
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def recover(self) -> int:
        return self.jobs.fail_interrupted(INTERRUPTED)

    def job_dir(self) -> Path:
        path = self.settings.logs_path / "retrain"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(
        self, model: str, candidates: list[str] | None, data_path: str | None
    ) -> dict[str, Any]:
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
                job_id = active["id"] if active else "?"
                raise ConflictError(f"a retrain of {model!r} is already running (job {job_id})")
            job_id = uuid.uuid4().hex
            job = self.jobs.create(job_id, model, candidates, str(data) if data else None)
            thread = threading.Thread(
                target=self._run,
                args=(job_id, model, candidates, data),
                name=f"retrain-{model}",
                daemon=True,
            )
            self._threads[model] = thread
            thread.start()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no retrain job {job_id!r}")
        log_file = self.job_dir() / f"{job_id}.log"
        if log_file.exists():
            lines = log_file.read_text(errors="replace").splitlines()
            job["progress"] = next((ln for ln in reversed(lines) if ln.startswith("[")), None)
            if job["status"] == "failed":
                job["log_tail"] = lines[-20:]
        return job

    def _run(
        self, job_id: str, model: str, candidates: list[str] | None, data: Path | None
    ) -> None:
        folder = self.job_dir()
        result_file = folder / f"{job_id}.json"
        cmd = [sys.executable, "-m", "prediction_service.training", model]
        cmd += ["--json-result", str(result_file)]
        if candidates:
            cmd += ["--candidates", ",".join(candidates)]
        if data:
            cmd += ["--data", str(data)]
        started = time.monotonic()
        self.metrics.retrain_in_progress.labels(model).set(1)
        status, error, outcome = "failed", None, None
        try:
            self.jobs.update(job_id, status="running", started_at=datetime.now(UTC))
            with (folder / f"{job_id}.log").open("wb") as out:
                proc = subprocess.Popen(  # nosec B603 - our own interpreter and module, no shell
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.settings.child_env()},
                    cwd=self.settings.home,
                )
                self._procs[model] = proc
                code = proc.wait()
            if self._stopping:
                error = INTERRUPTED
            elif code in (0, 3) and result_file.exists():
                outcome = json.loads(result_file.read_text())[0]
                status = "succeeded"
                if outcome["promoted"]:
                    # Serve the new champion now, not at the next poll, and before the job
                    # says it succeeded: a client that saw "succeeded" gets the new version.
                    self.lifecycle.sync(model)
            else:
                error = f"training exited with code {code}; see log_tail"
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            error = f"{type(exc).__name__}: {exc}"
            log.exception("retrain job %s failed", job_id)
        finally:
            self._procs.pop(model, None)
            self.metrics.retrain_in_progress.labels(model).set(0)
            self.metrics.retrain_runs.labels(model, status).inc()
            self.metrics.retrain_duration.labels(model).observe(time.monotonic() - started)
            values: dict[str, Any] = {
                "status": status,
                "finished_at": datetime.now(UTC),
                "error": error,
            }
            if outcome:
                values.update(
                    version=outcome["version"],
                    promoted=outcome["promoted"],
                    gate_reason=outcome["reason"],
                    metrics=outcome["metrics"],
                )
            try:
                self.jobs.update(job_id, **values)
            except Exception:  # noqa: BLE001 - the next start marks it interrupted
                log.exception("could not record the end of retrain job %s", job_id)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop running jobs (they are recorded as interrupted) and wait for their threads."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads.values())
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

"""Retrain jobs: the training CLI in a child process, watched from the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

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
    def __init__(
        self, settings: Settings, jobs: JobStore, lifecycle: ModelLifecycle, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.lifecycle = lifecycle
        self.metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}  # model -> running job
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    def recover(self) -> int:
        return self.jobs.fail_interrupted(INTERRUPTED)

    def job_dir(self) -> Path:
        path = self.settings.logs_path / "retrain"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def start(
        self, model: str, candidates: list[str] | None, data_path: str | None
    ) -> dict[str, Any]:
        spec = self.lifecycle.store.spec(model)
        if candidates is not None:
            select_candidates(spec, tuple(candidates))
        data = None if data_path is None else resolve_data_path(self.settings.data_path, data_path)
        running = self._tasks.get(model)
        active = await run_in_threadpool(self.jobs.active, model)
        if (running and not running.done()) or active:
            job_id = active["id"] if active else "?"
            raise ConflictError(f"a retrain of {model!r} is already running (job {job_id})")
        job_id = uuid.uuid4().hex
        job = await run_in_threadpool(
            self.jobs.create, job_id, model, candidates, str(data) if data else None
        )
        self._tasks[model] = asyncio.create_task(self._run(job_id, model, candidates, data))
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

    async def _run(
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
            await run_in_threadpool(
                self.jobs.update, job_id, status="running", started_at=datetime.now(UTC)
            )
            with (folder / f"{job_id}.log").open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *cmd,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**os.environ, **self.settings.child_env()},
                    cwd=self.settings.home,
                )
                self._procs[model] = proc
                code = await proc.wait()
            if code in (0, 3) and result_file.exists():
                outcome = json.loads(result_file.read_text())[0]
                status = "succeeded"
                if outcome["promoted"]:
                    # Serve the new champion now, not at the next poll, and before the job
                    # says it succeeded: a client that saw "succeeded" gets the new version.
                    await run_in_threadpool(self.lifecycle.sync, model)
            else:
                error = f"training exited with code {code}; see log_tail"
        except asyncio.CancelledError:
            error = INTERRUPTED
            raise
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
            await asyncio.shield(run_in_threadpool(self.jobs.update, job_id, **values))

    async def shutdown(self) -> None:
        for proc in list(self._procs.values()):
            if proc.returncode is None:
                proc.terminate()
        for task in list(self._tasks.values()):
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

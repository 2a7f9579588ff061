"""Retrain jobs (admin): start one, follow it, list them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Admin
from prediction_service.api.deps import RetrainDep
from prediction_service.api.responses import JSONResponse
from prediction_service.api.schemas import RetrainJob, RetrainJobs

router = APIRouter(prefix="/retrain", tags=["retrain"], dependencies=[Admin])


class RetrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(examples=["iris"])
    candidates: list[str] | None = Field(
        default=None, min_length=1, description="subset of the spec's candidate names"
    )
    data_path: str | None = Field(
        default=None, description="CSV to train on, relative to data/ (default: the spec's)"
    )


@router.post("", status_code=202, summary="Start a retrain job", response_model=RetrainJob)
async def start(body: RetrainIn, runner: RetrainDep) -> JSONResponse:
    job = await run_in_threadpool(runner.start, body.model, body.candidates, body.data_path)
    content = RetrainJob.model_validate(job).model_dump()
    return JSONResponse(content, status_code=202, headers={"Location": f"/retrain/{job['id']}"})


@router.get("/{job_id}", summary="One job's status, outcome and progress")
async def get_job(job_id: str, runner: RetrainDep) -> RetrainJob:
    return RetrainJob.model_validate(await run_in_threadpool(runner.get, job_id))


@router.get("", summary="Recent jobs, newest first")
async def list_jobs(
    runner: RetrainDep,
    model: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RetrainJobs:
    items = await run_in_threadpool(runner.jobs.list, model, limit)
    return RetrainJobs(items=items)  # type: ignore[arg-type]

"""Retrain jobs (admin): start one, follow it, list them.

No ``from __future__ import annotations``: the request body is generated from the specs, and
FastAPI must see it as a real type in the endpoint's signature.
"""

from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Body, Query
from pydantic import ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Admin
from prediction_service.api.deps import RetrainDep
from prediction_service.api.responses import JSONResponse
from prediction_service.api.schemas import RetrainJobs, errors
from prediction_service.domain import RetrainJob
from prediction_service.serving.codec import camel
from prediction_service.specs import ModelSpec


def retrain_body(specs: dict[str, ModelSpec]) -> Any:
    """One body per model, told apart by ``model``: each names its spec's candidates, so
    OpenAPI (and validation) say which candidates each model has."""
    variants = []
    for name, spec in specs.items():
        candidates: Any = Literal[tuple(c.name for c in spec.candidates)]
        variants.append(
            create_model(
                f"Retrain{camel(name)}In",
                __config__=ConfigDict(extra="forbid"),
                model=(Literal[name], Field(description="the model to retrain")),  # type: ignore[arg-type]
                candidates=(
                    list[candidates] | None,
                    Field(
                        default=None, min_length=1, description="subset of the spec's candidates"
                    ),
                ),
                data_path=(
                    str | None,
                    Field(
                        default=None,
                        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,510}\.csv$",
                        description="an existing CSV under data/, relative to it (default: "
                        "the spec's own data)",
                    ),
                ),
            )
        )
    return Annotated[Union[tuple(variants)], Field(discriminator="model")]  # noqa: UP007


def build_router(specs: dict[str, ModelSpec]) -> APIRouter:
    router = APIRouter(prefix="/retrain", tags=["retrain"], dependencies=[Admin])
    RetrainIn: Any = retrain_body(specs)

    @router.post(
        "",
        status_code=202,
        summary="Start a retrain job",
        response_model=RetrainJob,
        responses=errors(404, 409),
    )
    async def start(body: Annotated[RetrainIn, Body()], runner: RetrainDep) -> JSONResponse:
        job = await run_in_threadpool(runner.start, body.model, body.candidates, body.data_path)
        return JSONResponse(job.model_dump(), 202, headers={"Location": f"/retrain/{job.id}"})

    @router.get(
        "/{job_id}", summary="One job's status, outcome and progress", responses=errors(404)
    )
    async def get_job(job_id: str, runner: RetrainDep) -> RetrainJob:
        return await run_in_threadpool(runner.get, job_id)

    @router.get("", summary="Recent jobs, newest first")
    async def list_jobs(
        runner: RetrainDep,
        model: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> RetrainJobs:
        items = await run_in_threadpool(runner.jobs.list, model, limit)
        return RetrainJobs(items=items)

    return router

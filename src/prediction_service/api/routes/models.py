"""What each served model is: version, alias, run, metrics, params, data digest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Admin, Scope
from prediction_service.api.deps import CoreDep, LifecycleDep
from prediction_service.api.schemas import (
    FeatureInfo,
    GateInfo,
    ModelEvents,
    ModelInfo,
    TrafficInfo,
    errors,
)
from prediction_service.core import Core
from prediction_service.domain import ChampionChange, EventType, TrafficState, VersionSummary

router = APIRouter(prefix="/models", tags=["models"])


def traffic(core: Core, name: str) -> TrafficInfo:
    """The challenger's part: answers (a canary), or copies of requests (a shadow, with its
    agreement with the champion)."""
    state = core.lifecycle.traffic_state(name)
    shadow, _ = core.store.shadows.get(name, (None, 0.0))
    stage: Literal["shadow", "canary"] | None = None
    if state.shadow_percent:
        stage = "shadow"
    elif state.challenger_percent:
        stage = "canary"
    return TrafficInfo(
        challenger_version=state.challenger_version,
        challenger_percent=state.challenger_percent,
        shadow_percent=state.shadow_percent,
        stage=stage,
        agreement=core.monitor.shadow_agreement(name, shadow.version) if shadow else None,
    )


def describe(core: Core, name: str, detailed: bool = True) -> ModelInfo:
    """What ``name`` serves. The details (run, parameters, metrics, gate, code and data
    digests) only when ``detailed``; the aliases and the gate are read from the registry
    now, not when the version was loaded (a promotion or rollback moves them)."""
    store = core.store
    spec = store.spec(name)
    head: dict[str, Any] = {
        "name": name,
        "registered_name": spec.registered_name,
        "task": spec.task,
        "description": spec.description,
        "features": [
            FeatureInfo(name=f.name, type=f.type, min=f.min, max=f.max) for f in spec.features
        ],
        "classes": spec.target.classes,
        "traffic": traffic(core, name),
    }
    model = store.loaded(name)
    if model is None:
        return ModelInfo(**head, loaded=False, error=store.error(name) if detailed else None)
    if not detailed:
        return ModelInfo(**head, loaded=True, version=model.version)
    info = model.info
    now = store.registry.find_version(spec.registered_name, model.version) or info
    report = info.run_tags.get("report")
    return ModelInfo(
        **head,
        loaded=True,
        version=model.version,
        aliases=sorted(now.aliases),
        run_id=info.run_id,
        metrics=info.evaluation_metrics,
        params=info.params,
        dataset_digest=info.run_tags.get("data_digest"),
        spec_digest=info.run_tags.get("spec_digest"),
        git_commit=info.run_tags.get("git_commit"),
        gate=GateInfo(decision=now.tags.get("gate_decision"), reason=now.tags.get("gate_reason")),
        trained_at=datetime.fromtimestamp(info.created_at_ms / 1000, UTC).isoformat(),
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).isoformat(),
        report=f"runs:/{info.run_id}/{report}" if report else None,
        predictor=model.predictor_kind,
        batching=model.batching,
    )


def _detailed(request: Request, core: Core) -> bool:
    return core.access.allows("read", request.headers.get("authorization"))


@router.get(
    "",
    summary="Every model and what it is serving (the details need the read scope when it is "
    "closed)",
)
async def list_models(request: Request, core: CoreDep) -> list[ModelInfo]:
    detailed = _detailed(request, core)
    return [await run_in_threadpool(describe, core, name, detailed) for name in core.store.specs]


@router.get(
    "/{model}",
    summary="One model and what it is serving (the details need the read scope when it is "
    "closed)",
    responses=errors(404),
)
async def get_model(model: str, request: Request, core: CoreDep) -> ModelInfo:
    return await run_in_threadpool(describe, core, model, _detailed(request, core))


@router.get(
    "/{model}/events",
    summary="What the automation and admins decided about a model, and why (newest first)",
    dependencies=[Scope("read")],
    responses=errors(404),
)
async def list_events(
    model: str,
    lifecycle: LifecycleDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[list[EventType] | None, Query(description="only these types")] = None,
) -> ModelEvents:
    lifecycle.store.spec(model)  # 404 for an unknown model
    events = await run_in_threadpool(lifecycle.events.list, model, limit, type)
    return ModelEvents(events=events)


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(pattern=r"^[0-9]{1,9}$", examples=["3"], description="registered version")


class TrafficIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    challenger_percent: float = Field(ge=0, le=100, strict=True, examples=[10])


@router.get(
    "/{model}/versions",
    summary="Every registered version with aliases and gate decisions",
    dependencies=[Scope("read")],
    responses=errors(404),
)
async def list_versions(model: str, lifecycle: LifecycleDep) -> list[VersionSummary]:
    return await run_in_threadpool(lifecycle.versions, model)


@router.post(
    "/{model}/promote",
    dependencies=[Admin],
    summary="Make a version the champion now",
    responses=errors(404, 409),
)
async def promote(model: str, body: PromoteIn, lifecycle: LifecycleDep) -> ChampionChange:
    return await run_in_threadpool(lifecycle.promote, model, body.version)


@router.post(
    "/{model}/rollback",
    dependencies=[Admin],
    summary="Restore the previous champion",
    responses=errors(404, 409),
)
async def rollback(model: str, lifecycle: LifecycleDep) -> ChampionChange:
    return await run_in_threadpool(lifecycle.rollback, model)


@router.post(
    "/{model}/traffic",
    dependencies=[Admin],
    summary="Route a share of traffic to the challenger",
    responses=errors(404, 409),
)
async def set_traffic(model: str, body: TrafficIn, lifecycle: LifecycleDep) -> TrafficState:
    return await run_in_threadpool(lifecycle.set_traffic, model, body.challenger_percent)


class ShadowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(
        ge=0, le=100, strict=True, examples=[100],
        description="share of requests copied to the challenger as a shadow; 0 stops it",
    )  # fmt: skip


@router.post(
    "/{model}/shadow",
    dependencies=[Admin],
    summary="Copy a share of requests to the challenger as a shadow (answers still come from "
    "the champion), or stop (0)",
    responses=errors(404, 409),
)
async def set_shadow(model: str, body: ShadowIn, lifecycle: LifecycleDep) -> TrafficState:
    return await run_in_threadpool(lifecycle.set_shadow, model, body.percent)

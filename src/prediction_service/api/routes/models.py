"""What each served model is: version, alias, run, metrics, params, data digest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Admin, Scope
from prediction_service.api.deps import LifecycleDep, StoreDep
from prediction_service.api.schemas import (
    ChampionChange,
    ModelEvents,
    ModelInfo,
    TrafficState,
    VersionSummary,
    errors,
)
from prediction_service.serving.model_store import ModelStore
from prediction_service.storage.automation import EventType

router = APIRouter(prefix="/models", tags=["models"])


def describe(store: ModelStore, name: str) -> dict[str, Any]:
    spec = store.spec(name)
    out: dict[str, Any] = {
        "name": name,
        "registered_name": spec.registered_name,
        "task": spec.task,
        "description": spec.description,
        "features": [
            {"name": f.name, "type": f.type, "min": f.min, "max": f.max} for f in spec.features
        ],
        "classes": spec.target.classes,
        "loaded": False,
    }
    challenger, percent = store.challenger(name)
    out["traffic"] = {
        "challenger_version": challenger.version if challenger else None,
        "challenger_percent": percent,
    }
    model = store.loaded(name)
    if model is None:
        out["error"] = store.error(name)
        return out
    info = model.info
    out.update(
        loaded=True,
        version=model.version,
        aliases=info.aliases,
        run_id=info.run_id,
        metrics=info.evaluation_metrics,
        params=info.params,
        dataset_digest=info.run_tags.get("data_digest"),
        spec_digest=info.run_tags.get("spec_digest"),
        git_commit=info.run_tags.get("git_commit"),
        gate={"decision": info.tags.get("gate_decision"), "reason": info.tags.get("gate_reason")},
        trained_at=datetime.fromtimestamp(info.created_at_ms / 1000, UTC).isoformat(),
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).isoformat(),
        predictor=model.predictor_kind,
    )
    if info.run_tags.get("report"):
        out["report"] = f"runs:/{info.run_id}/{info.run_tags['report']}"
    return out


@router.get("", summary="Every model and what it is serving")
async def list_models(store: StoreDep) -> list[ModelInfo]:
    return [ModelInfo.model_validate(describe(store, name)) for name in store.specs]


@router.get("/{model}", summary="One model and what it is serving", responses=errors(404))
async def get_model(model: str, store: StoreDep) -> ModelInfo:
    return ModelInfo.model_validate(describe(store, model))


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
    return ModelEvents.model_validate({"events": events})


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
    versions = await run_in_threadpool(lifecycle.versions, model)
    return [VersionSummary.model_validate(v) for v in versions]


@router.post(
    "/{model}/promote",
    dependencies=[Admin],
    summary="Make a version the champion now",
    responses=errors(404, 409),
)
async def promote(model: str, body: PromoteIn, lifecycle: LifecycleDep) -> ChampionChange:
    return ChampionChange.model_validate(
        await run_in_threadpool(lifecycle.promote, model, body.version)
    )


@router.post(
    "/{model}/rollback",
    dependencies=[Admin],
    summary="Restore the previous champion",
    responses=errors(404, 409),
)
async def rollback(model: str, lifecycle: LifecycleDep) -> ChampionChange:
    return ChampionChange.model_validate(await run_in_threadpool(lifecycle.rollback, model))


@router.post(
    "/{model}/traffic",
    dependencies=[Admin],
    summary="Route a share of traffic to the challenger",
    responses=errors(404, 409),
)
async def set_traffic(model: str, body: TrafficIn, lifecycle: LifecycleDep) -> TrafficState:
    return TrafficState.model_validate(
        await run_in_threadpool(lifecycle.set_traffic, model, body.challenger_percent)
    )

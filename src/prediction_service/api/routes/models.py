"""What each served model is: version, alias, run, metrics, params, data digest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from prediction_service.api.deps import StoreDep
from prediction_service.serving.model_store import ModelStore

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
        metrics={k: v for k, v in sorted(info.metrics.items()) if k.startswith(("test_", "cv_"))},
        params=info.params,
        dataset_digest=info.run_tags.get("data_digest"),
        spec_digest=info.run_tags.get("spec_digest"),
        git_commit=info.run_tags.get("git_commit"),
        gate={"decision": info.tags.get("gate_decision"), "reason": info.tags.get("gate_reason")},
        trained_at=datetime.fromtimestamp(info.created_at_ms / 1000, UTC).isoformat(),
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).isoformat(),
        predictor=model.predictor_kind,
    )
    return out


@router.get("", summary="Every model and what it is serving")
async def list_models(store: StoreDep) -> list[dict[str, Any]]:
    return [describe(store, name) for name in store.specs]


@router.get("/{model}", summary="One model and what it is serving")
async def get_model(model: str, store: StoreDep) -> dict[str, Any]:
    return describe(store, model)

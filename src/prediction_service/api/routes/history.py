"""Recent logged predictions, newest first, with cursor pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Scope
from prediction_service.api.deps import LogDep, StoreDep
from prediction_service.api.schemas import HistoryPage, errors

router = APIRouter(prefix="/predictions", tags=["predictions"], dependencies=[Scope("read")])


@router.get("/history", summary="Recent logged predictions", responses=errors(404))
async def history(
    store: StoreDep,
    log: LogDep,
    model: Annotated[str | None, Query(description="only this model")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="next_cursor of the previous page")
    ] = None,
    trace_id: Annotated[
        str | None,
        Query(pattern="^[0-9a-f]{32}$", description="only the rows of this trace (32 hex digits)"),
    ] = None,
) -> HistoryPage:
    if model is not None:
        store.spec(model)  # 404 for unknown models
    items, next_cursor = await run_in_threadpool(log.history, model, limit, cursor, trace_id)
    return HistoryPage(items=items, next_cursor=next_cursor)

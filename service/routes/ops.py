"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.routes.deps import StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process is alive."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "Models are loading, or loading failed."}})
async def readyz(state: StateDep) -> JSONResponse:
    """200 once every configured model is loaded and warmed up (``partial`` when some failed and
    partial start is allowed), 503 before and while shutting down."""
    body: dict = {"status": state.status, "models": list(state.models)}
    if state.error:
        body["error"] = state.error
    if state.failed:
        body["failed"] = dict(state.failed)
    status = 200 if state.ready else 503
    headers = {} if state.ready else {"Retry-After": str(state.settings.retry_after_seconds)}
    return JSONResponse(body, status_code=status, headers=headers)


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

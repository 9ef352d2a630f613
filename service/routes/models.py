"""``GET /models`` and ``GET /models/{name}``."""

from __future__ import annotations

from fastapi import APIRouter

from service.errors import ErrorBody
from service.routes.deps import StateDep
from service.schemas import ModelDetail, ModelInfo

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo], responses={503: {"model": ErrorBody}})
async def list_models(state: StateDep) -> list[dict]:
    """The loaded models, the default first."""
    state.model(None)  # 503 until ready
    return [served.loaded.describe() for served in state.models.values()]


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def model_detail(name: str, state: StateDep) -> dict:
    """One model, with every hookable layer and its output shape for the model's input size."""
    return state.model(name).loaded.describe(with_layers=True)

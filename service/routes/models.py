"""``GET /models`` and ``GET /models/{name}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.errors import ErrorBody
from service.routes.deps import StateDep
from service.schemas import NAME_LENGTH, ModelDetail, ModelInfo

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
async def model_detail(
    name: Annotated[str, Path(min_length=1, max_length=NAME_LENGTH)], state: StateDep
) -> dict:
    """One model, with every hookable layer and its output shape for the model's input size."""
    return state.model(name).loaded.describe(with_layers=True)

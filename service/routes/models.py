"""``GET /models``, ``GET /models/{name}`` and its labels and methods."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.errors import ErrorBody
from service.routes.deps import StateDep
from service.schemas import NAME_LENGTH, LabelList, MethodList, ModelDetail, ModelInfo

router = APIRouter(tags=["models"])

_UNKNOWN = {404: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@router.get("/models", response_model=list[ModelInfo], responses={503: {"model": ErrorBody}})
async def list_models(state: StateDep) -> list[dict]:
    """The loaded models, the default first."""
    state.model(None)  # 503 until ready
    return [served.loaded.describe() for served in state.models.values()]


@router.get("/models/{name}", response_model=ModelDetail, responses=_UNKNOWN)
async def model_detail(
    name: Annotated[str, Path(min_length=1, max_length=NAME_LENGTH)], state: StateDep
) -> dict:
    """One model, with every hookable layer and its output shape for the model's input size, and
    every CAM method with its cost at the default layer."""
    served = state.model(name)
    methods = served.runner.describe_methods()
    return served.loaded.describe(with_layers=True) | {"methods": methods}


@router.get(
    "/models/{name}/methods",
    response_model=MethodList,
    responses={
        **_UNKNOWN,
        422: {"model": ErrorBody, "description": "A layer that is not spatial."},
    },
)
async def model_methods(
    name: Annotated[str, Path(min_length=1, max_length=NAME_LENGTH)],
    state: StateDep,
    layer: Annotated[
        str | None, Query(description="A spatial layer; default: the model's CAM layer.")
    ] = None,
) -> dict:
    """Every CAM method as it would run at ``layer``: whether its map depends on the class, and its
    cost per image in forward passes of the model."""
    served = state.model(name)
    methods = served.runner.describe_methods(layer)
    return {"model": served.name, "layer": layer or served.loaded.target_layer, "methods": methods}


@router.get("/models/{name}/labels", response_model=LabelList, responses=_UNKNOWN)
async def model_labels(
    name: Annotated[str, Path(min_length=1, max_length=NAME_LENGTH)], state: StateDep
) -> dict:
    """The model's class labels by index (what /gradcam's ``target`` matches)."""
    served = state.model(name)
    return {"model": served.name, "labels": list(served.loaded.labels)}

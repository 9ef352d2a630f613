"""``POST /predict``, ``/featuremaps`` and ``/gradcam``: images in, scores and pictures out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.errors import ErrorBody
from service.pipeline import serve
from service.routes.deps import StateDep
from service.schemas import (
    FeatureMapOptions,
    FeatureMapResponse,
    GradCAMOptions,
    GradCAMResponse,
    PredictOptions,
    PredictResponse,
)

router = APIRouter(tags=["explain"])

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Not a decodable image, invalid base64 or JSON, "
        "an extreme aspect ratio, no images.",
    },
    401: {"model": ErrorBody, "description": "An API key is needed (when keys are configured)."},
    404: {"model": ErrorBody, "description": "Unknown model, layer, method or class label."},
    408: {"model": ErrorBody, "description": "The request body did not arrive in time."},
    413: {
        "model": ErrorBody,
        "description": "Body, image pixels or decoding memory, image count, targets or layers "
        "over the limit.",
    },
    415: {"model": ErrorBody, "description": "A content type that is none of the three forms."},
    422: {"model": ErrorBody, "description": "An option out of range or not applicable."},
    503: {
        "model": ErrorBody,
        "description": "Not ready yet, saturated, or shutting down: retry after Retry-After.",
        "headers": _RETRY_AFTER,
    },
    504: {"model": ErrorBody, "description": "The request could not be answered in time."},
}


def _request_body(options: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for the three ways to send images (the body is read by the pipeline, not FastAPI)."""
    json_schema = options.model_json_schema()
    json_schema["properties"] = {
        "images": {
            "type": "array",
            "items": {"type": "string", "contentEncoding": "base64"},
            "minItems": 1,
            "description": "Base64 images; a data:image/...;base64, prefix is accepted.",
        },
        **json_schema["properties"],
    }
    json_schema["required"] = ["images"]
    json_schema["additionalProperties"] = False
    binary = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "description": "Images as multipart parts named `image` (options in the query), as a "
            "JSON object (options beside `images`), or one raw image body (options in the query) "
            "as `image/*` or `application/octet-stream`.",
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"image": {"type": "array", "items": binary, "minItems": 1}},
                        "required": ["image"],
                        "additionalProperties": False,
                    }
                },
                "application/json": {"schema": json_schema},
                "image/*": {"schema": binary},
                "application/octet-stream": {"schema": binary},
            },
        }
    }


@router.post(
    "/predict",
    summary="Class scores",
    response_model=None,
    responses={200: {"model": PredictResponse}, **_ERRORS},
    openapi_extra=_request_body(PredictOptions),
)
async def predict(
    request: Request, state: StateDep, options: Annotated[PredictOptions, Query()]
) -> JSONResponse:
    """Top classes with softmax scores for each image, in request order."""
    return await serve(request, state, options, "predict")


@router.post(
    "/featuremaps",
    summary="Feature maps of chosen layers",
    response_model=None,
    responses={200: {"model": FeatureMapResponse}, **_ERRORS},
    openapi_extra=_request_body(FeatureMapOptions),
)
async def featuremaps(
    request: Request, state: StateDep, options: Annotated[FeatureMapOptions, Query()]
) -> JSONResponse:
    """Each layer's output, captured by forward hooks in one pass, as a grid of channels (PNG)."""
    return await serve(request, state, options, "featuremaps")


@router.post(
    "/gradcam",
    summary="Class activation maps",
    response_model=None,
    responses={200: {"model": GradCAMResponse}, **_ERRORS},
    openapi_extra=_request_body(GradCAMOptions),
)
async def gradcam(
    request: Request, state: StateDep, options: Annotated[GradCAMOptions, Query()]
) -> JSONResponse:
    """Grad-CAM (or another CAM method) for each image and target class: the heatmap alone and
    over the image as the model saw it, both at the model's input size."""
    return await serve(request, state, options, "gradcam")

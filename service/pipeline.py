"""One explanation request, step by step: read, validate, decode, batch, render, answer.

What is computed and how a record looks is the library's (:mod:`explain.records`); this module is
the HTTP edge: options from the query and the body, images from the request, the model's queue,
and pictures as base64.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import torch
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from explain.images import ImageLimits, PreparedImage, prepare_image
from explain.records import Picture, Plan, make_plan, map_pictures, render_record
from explain.tasks import ImageOutput
from service.errors import ApiError
from service.inputs import read_images
from service.runtime import QueueFullError, WorkerStoppedError
from service.schemas import CommonOptions
from service.state import ServedModel, ServiceState

__all__ = ["serve"]


# -- the shared path ------------------------------------------------------------------------------


def _merge_options(query: BaseModel, sent: dict[str, Any]) -> BaseModel:
    """Options from the query string and, for the JSON form, from the body; the same option in
    both places with different values is refused rather than one silently winning."""
    if not sent:
        return query
    try:
        body = type(query).model_validate(sent)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(422, "invalid_option", f"{where}: {first['msg']}") from None
    merged = query.model_dump(include=query.model_fields_set)
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name in merged and merged[name] != value:
            raise ApiError(
                422,
                "conflicting_option",
                f"option {name!r} is given in the query and the body with "
                "different values; give it once",
            )
        merged[name] = value
    return type(query).model_validate(merged)


def _prepare(data: bytes, index: int, limits: ImageLimits, served: ServedModel) -> PreparedImage:
    return prepare_image(data, served.loaded.preprocess, limits, index)


def _render_all(
    plan: Plan, images: list[PreparedImage], outputs: list[ImageOutput], png_level: int
) -> list[dict[str, Any]]:
    def as_base64(picture: Picture, field: str, entry: dict[str, Any]) -> str:
        return base64.b64encode(picture.encode(png_level)).decode("ascii")

    return [
        map_pictures(render_record(plan, image, output), as_base64)
        for image, output in zip(images, outputs, strict=True)
    ]


async def serve(
    request: Request, state: ServiceState, query: CommonOptions, endpoint: str
) -> JSONResponse:
    """Answer one explanation request to ``endpoint`` (``predict``, ``featuremaps``, ``gradcam``)."""
    started = time.perf_counter()
    settings = state.settings
    received = await read_images(
        request, max_body=settings.max_body_bytes, max_images=settings.max_images
    )
    options = _merge_options(query, received.options)
    served = state.model(options.model)
    plan = make_plan(endpoint, served.loaded, **options.model_dump(exclude={"model"}))
    state.metrics.images.labels(request.url.path).inc(len(received.images))

    limits = ImageLimits(settings.max_image_pixels, settings.max_aspect_ratio)
    decode_started = time.perf_counter()
    images = await asyncio.gather(
        *(state.run_io(_prepare, data, i, limits, served) for i, data in enumerate(received.images))
    )
    decode_seconds = time.perf_counter() - decode_started

    inputs = torch.stack([image.tensor for image in images])
    try:
        future = served.worker.submit(plan.task, inputs, [plan.targets] * len(images))
    except QueueFullError as error:
        state.metrics.rejected.labels(served.name).inc()
        raise ApiError(
            503,
            "overloaded",
            f"{error}; retry after {settings.retry_after_seconds} s",
            {"Retry-After": str(settings.retry_after_seconds)},
        ) from None
    try:
        result = await asyncio.wrap_future(future)
    except WorkerStoppedError as error:
        raise ApiError(503, "shutting_down", str(error), {"Retry-After": "5"}) from None

    encode_started = time.perf_counter()
    results = await state.run_io(
        _render_all, plan, images, result.outputs, settings.png_compress_level
    )
    finished = time.perf_counter()
    timing = {
        "decode": decode_seconds,
        "queue": result.stats.queue_seconds,
        "inference": result.stats.inference_seconds,
        "encode": finished - encode_started,
        "total": finished - started,
    }
    return JSONResponse(
        {
            "model": served.name,
            "results": results,
            "timing_ms": {name: round(seconds * 1000, 2) for name, seconds in timing.items()},
        }
    )

"""One explanation request, step by step: read, validate, decode, batch, render, answer.

Each endpoint contributes a *plan*: from its validated options it names the model task to run, the
classes to explain, and how to render one image's output. Everything else is shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from explain.methods import get_method
from explain.render import colormap_index, colormap_lut, feature_grid, overlay, png_base64
from service.errors import ApiError
from service.images import ImageLimits, decode_image
from service.inputs import read_images
from service.runtime import QueueFullError, WorkerStoppedError
from service.schemas import CommonOptions, FeatureMapOptions, GradCAMOptions
from service.state import ServedModel, ServiceState
from service.tasks import CAMTask, FeatureMapTask, ImageOutput, PredictTask

__all__ = ["Plan", "plan_featuremaps", "plan_gradcam", "plan_predict", "serve"]

DEFAULT_TOP_K = 5
Renderer = Callable[["PreparedImage", ImageOutput], dict[str, Any]]


@dataclass
class PreparedImage:
    """A decoded image: the model's input tensor and the pixels the model saw."""

    tensor: torch.Tensor
    pixels: torch.Tensor
    warnings: list[str]


@dataclass(frozen=True)
class Plan:
    task: Any
    targets: list[int] | None
    render: Renderer


# -- plans ----------------------------------------------------------------------------------------


def _top_k(
    served: ServedModel, options: CommonOptions
) -> Callable[[torch.Tensor], list[dict[str, Any]]]:
    classes = served.loaded.num_classes
    k = options.top_k if options.top_k is not None else min(DEFAULT_TOP_K, classes)
    if k > classes:
        raise ApiError(
            422, "invalid_option", f"top_k is {k} but model {served.name!r} has {classes} classes"
        )
    labels = served.loaded.labels

    def top(probabilities: torch.Tensor) -> list[dict[str, Any]]:
        scores, indices = probabilities.topk(k)
        return [
            {"index": i, "label": labels[i], "score": round(s, 6)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]

    return top


def plan_predict(served: ServedModel, options: CommonOptions, png_level: int) -> Plan:
    top = _top_k(served, options)
    return Plan(PredictTask(), None, lambda image, output: {"top_k": top(output.probabilities)})


def plan_featuremaps(served: ServedModel, options: FeatureMapOptions, png_level: int) -> Plan:
    top = _top_k(served, options)
    layers = options.layers or served.loaded.feature_layers
    if not layers:
        raise ApiError(
            422,
            "layer_required",
            f"model {served.name!r} names no default feature layers; pass 'layers' "
            "(see GET /models/{name} for the spatial ones)",
        )
    for layer in layers:
        served.loaded.layers.check(layer, spatial=True)
    limit = options.max_channels

    def render(image: PreparedImage, output: ImageOutput) -> dict[str, Any]:
        assert output.feature_maps is not None  # a feature-map task made it; not input validation
        maps = []
        for layer in layers:
            feature_map = output.feature_maps[layer]
            maps.append(
                {
                    "layer": layer,
                    "shape": list(feature_map.shape),
                    "channels_shown": min(limit, feature_map.shape[0]),
                    "png": png_base64(feature_grid(feature_map, limit), png_level),
                }
            )
        return {"top_k": top(output.probabilities), "featuremaps": maps}

    return Plan(FeatureMapTask(tuple(layers)), None, render)


def plan_gradcam(served: ServedModel, options: GradCAMOptions, png_level: int) -> Plan:
    top = _top_k(served, options)
    loaded = served.loaded
    get_method(options.method)
    layer = options.layer or loaded.target_layer
    if layer is None:
        raise ApiError(
            422,
            "layer_required",
            f"model {served.name!r} has no default CAM layer; pass 'layer' "
            "(see GET /models/{name} for the spatial ones)",
        )
    loaded.layers.check(layer, spatial=True)
    targets = [loaded.labels.resolve(t) for t in options.target] if options.target else None
    lut = colormap_lut(options.colormap)

    def render(image: PreparedImage, output: ImageOutput) -> dict[str, Any]:
        assert output.cams is not None and output.heatmaps is not None  # made by a CAM task
        assert output.targets is not None
        explanations = []
        for j, index in enumerate(output.targets):
            heat_index = colormap_index(output.heatmaps[j])
            heat = np.take(lut, heat_index, axis=0)
            explanation: dict[str, Any] = {
                "index": index,
                "label": loaded.labels[index],
                "score": round(float(output.probabilities[index]), 6),
                "method": options.method,
                "layer": layer,
                "overlay_png": png_base64(overlay(image.pixels, heat, options.alpha), png_level),
                "heatmap_png": png_base64(heat_index, png_level, palette=lut),
            }
            if options.return_cam:
                cam = output.cams[j]
                values = [[round(v, 6) for v in row] for row in cam.tolist()]
                explanation["cam"] = {"shape": list(cam.shape), "values": values}
            explanations.append(explanation)
        return {"top_k": top(output.probabilities), "explanations": explanations}

    return Plan(CAMTask(options.method, layer), targets, render)


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
    preprocess = served.loaded.preprocess
    decoded = decode_image(data, limits, index, min_side=preprocess.resize_size)
    pixels = preprocess.crop(decoded.image)
    return PreparedImage(preprocess.normalize(pixels), pixels, decoded.warnings)


def _render_all(
    plan: Plan, images: list[PreparedImage], outputs: list[ImageOutput]
) -> list[dict[str, Any]]:
    return [
        plan.render(image, output) | {"warnings": image.warnings}
        for image, output in zip(images, outputs, strict=True)
    ]


async def serve(
    request: Request,
    state: ServiceState,
    query: CommonOptions,
    make_plan: Callable[[ServedModel, Any, int], Plan],
) -> JSONResponse:
    """Answer one explanation request."""
    started = time.perf_counter()
    settings = state.settings
    received = await read_images(
        request, max_body=settings.max_body_bytes, max_images=settings.max_images
    )
    options = _merge_options(query, received.options)
    served = state.model(options.model)
    plan = make_plan(served, options, settings.png_compress_level)
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
    results = await state.run_io(_render_all, plan, images, result.outputs)
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

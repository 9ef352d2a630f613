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
from starlette.requests import ClientDisconnect

from explain.images import ImageLimits, OpenedImage, PreparedImage, open_image, prepare_opened
from explain.records import Picture, Plan, make_plan, map_pictures, render_record
from explain.tasks import ImageOutput
from service.admission import check_cost, guard, retry_after
from service.errors import ApiError, note, quote
from service.inputs import read_images
from service.runtime import QueueFullError, WorkerStoppedError
from service.schemas import CommonOptions
from service.state import ServedModel, ServiceState

__all__ = ["serve"]


# -- the shared path ------------------------------------------------------------------------------


def _json_integers(value: Any) -> Any:
    """JSON's integers as Python ints: ``2.0`` is an integer in JSON Schema's sense, which strict
    validation would refuse (a float field still takes it, as an int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_json_integers(item) for item in value]
    return value


def _merge_options(query: BaseModel, sent: dict[str, Any]) -> BaseModel:
    """Options from the query string and, for the JSON form, from the body; the same option in
    both places with different values is refused rather than one silently winning. A JSON
    ``null`` is an option not given."""
    sent = {name: _json_integers(value) for name, value in sent.items() if value is not None}
    if not sent:
        return query
    try:  # JSON has real types: `true` is no integer, "5" no number
        body = type(query).model_validate(sent, strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = quote(".".join(str(p) for p in first["loc"]))
        raise ApiError(422, "invalid_option", f"{where}: {first['msg']}") from None
    merged = query.model_dump(include=query.model_fields_set)
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name in merged and merged[name] != value:
            raise ApiError(
                422,
                "conflicting_option",
                f"option {quote(name)} is given in the query and the body with "
                "different values; give it once",
            )
        merged[name] = value
    return type(query).model_validate(merged)


def _open(data: bytes, index: int, limits: ImageLimits, served: ServedModel) -> OpenedImage:
    return open_image(data, limits, index, min_side=served.loaded.preprocess.resize_size)


def _prepare(opened: OpenedImage, served: ServedModel) -> PreparedImage:
    return prepare_opened(opened, served.loaded.preprocess)


async def _decode(
    state: ServiceState, data: bytes, index: int, limits: ImageLimits, served: ServedModel
) -> PreparedImage:
    """Read the header, wait for room in the decoding budget, decode: big images on their own
    thread, so that small ones never wait behind them."""
    opened = await state.run_io(_open, data, index, limits, served)
    async with state.budget.hold(opened.decode_bytes, index):
        large = not state.budget.is_small(opened.decode_bytes)
        prepared = await state.run_io(_prepare, opened, served, large=large)
        state.trimmer.decoded(opened.decode_bytes)
    if state.trimmer.due(state.budget):
        await state.run_io(state.trimmer.trim)
    return prepared


def _render_all(
    plan: Plan, images: list[PreparedImage], outputs: list[ImageOutput], png_level: int
) -> list[dict[str, Any]]:
    def as_base64(picture: Picture, field: str, entry: dict[str, Any]) -> str:
        return base64.b64encode(picture.encode(png_level)).decode("ascii")

    return [
        map_pictures(render_record(plan, image, output), as_base64)
        for image, output in zip(images, outputs, strict=True)
    ]


def _stopping(state: ServiceState) -> ApiError:
    return ApiError(
        503,
        "shutting_down",
        "the service is shutting down; retry on another instance",
        {"Retry-After": str(state.settings.retry_after_seconds), "Connection": "close"},
    )


async def serve(
    request: Request, state: ServiceState, query: CommonOptions, endpoint: str
) -> JSONResponse:
    """Answer one explanation request to ``endpoint`` (``predict``, ``featuremaps``, ``gradcam``).

    The body must arrive within ``body_timeout_s`` (else 408) and the whole answer within
    ``request_timeout_s`` (else 504); a client that disconnects, or a shutdown, cancels the work
    that has not started.
    """
    started = time.perf_counter()
    settings = state.settings
    if state.stopping.is_set():
        raise _stopping(state)
    deadline = started + settings.request_timeout_s
    body_deadline = min(deadline, started + settings.body_timeout_s)
    try:
        received = await guard(
            read_images(
                request,
                max_body=settings.max_body_bytes,
                max_images=settings.max_images,
                buffers=state.bodies,
            ),
            timeout=body_deadline - time.perf_counter(),
            on_timeout=lambda: ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {settings.body_timeout_s:g} s",
                {"Connection": "close"},
            ),
            watch={state.stopping.wait(): lambda: _stopping(state)},
        )
    except ClientDisconnect:
        raise ApiError(499, "client_closed_request", "the client went away") from None
    note(request.scope, images=len(received.images))
    work = _answer(request, state, query, endpoint, received, started)
    return await guard(
        work,
        timeout=deadline - time.perf_counter(),
        on_timeout=lambda: ApiError(
            504,
            "deadline_exceeded",
            f"the request could not be answered within {settings.request_timeout_s:g} s; "
            "send fewer images or a cheaper method, or retry later",
        ),
        watch={
            _disconnected(request): lambda: ApiError(
                499, "client_closed_request", "the client went away"
            ),
            state.shutdown_deadline(): lambda: _stopping(state),
        },
    )


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body has been read, so the next message says so)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _answer(
    request: Request,
    state: ServiceState,
    query: CommonOptions,
    endpoint: str,
    received: Any,
    started: float,
) -> JSONResponse:
    settings = state.settings
    options = _merge_options(query, received.options)
    check_cost(options, settings)
    served = state.model(options.model)
    note(request.scope, model=served.name)
    plan = make_plan(endpoint, served.loaded, **options.model_dump(exclude={"model"}))
    state.metrics.images.labels(request.url.path).inc(len(received.images))

    limits = ImageLimits(
        settings.max_image_pixels, settings.max_aspect_ratio, state.budget.per_image
    )
    decode_started = time.perf_counter()
    images = await asyncio.gather(
        *(_decode(state, data, i, limits, served) for i, data in enumerate(received.images))
    )
    received.images.clear()  # the encoded bytes are no longer needed
    decode_seconds = time.perf_counter() - decode_started

    inputs = torch.stack([image.tensor for image in images])
    cost = served.runner.cost(plan.task, targets=len(plan.targets or [None]))
    try:
        futures = served.worker.submit_many(plan.task, inputs, [plan.targets] * len(images), cost)
    except QueueFullError as error:
        state.metrics.rejected.labels(served.name).inc()
        wait = retry_after(error.wait_seconds, settings)
        raise ApiError(
            503, "overloaded", f"{error}; retry after {wait} s", {"Retry-After": wait}
        ) from None
    except WorkerStoppedError:
        raise _stopping(state) from None
    try:
        results = await asyncio.gather(*(asyncio.wrap_future(future) for future in futures))
    except WorkerStoppedError:
        raise _stopping(state) from None
    finally:
        for future in futures:
            future.cancel()  # the jobs not started yet, when this request is given up

    outputs = [output for result in results for output in result.outputs]
    encode_started = time.perf_counter()
    rendered = await state.run_io(_render_all, plan, images, outputs, settings.png_compress_level)
    finished = time.perf_counter()
    timing = {
        "decode": decode_seconds,
        "queue": max(result.stats.queue_seconds for result in results),
        "inference": sum(result.stats.inference_seconds for result in results),
        "encode": finished - encode_started,
        "total": finished - started,
    }
    return JSONResponse(
        {
            "model": served.name,
            "results": rendered,
            "timing_ms": {name: round(seconds * 1000, 2) for name, seconds in timing.items()},
        }
    )

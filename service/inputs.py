"""Reading a request: the body within its size limit, then images and options from one of three forms.

| form      | body                                             | options          |
| --------- | ------------------------------------------------ | ---------------- |
| multipart | ``multipart/form-data``, parts named ``image``   | query parameters |
| JSON      | ``{"images": ["<base64>", ...], ...options}``    | the JSON fields  |
| raw       | the image bytes, ``Content-Type: image/*``        | query parameters |
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import ApiError, quote

__all__ = ["BodyBuffers", "RequestImages", "parse_json", "read_body", "read_images"]

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")
_RAW_TYPES = ("application/octet-stream",)
_URLSAFE = bytes.maketrans(b"-_", b"+/")


@dataclass
class RequestImages:
    """Images (still encoded) and, for the JSON form, the options sent beside them."""

    images: list[bytes]
    options: dict[str, Any] = field(default_factory=dict)
    form: str = "raw"


class BodyBuffers:
    """Bytes of request bodies being received at once, across every request, within ``limit``:
    uploads that stall just short of their end cannot pin memory without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise ApiError(
                503,
                "overloaded",
                "too many request bodies are being received at once; retry shortly",
                {"Retry-After": "1", "Connection": "close"},
            )
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size


async def read_body(request: Request, limit: int, buffers: BodyBuffers | None = None) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds ``limit`` bytes; while it arrives,
    its bytes count against ``buffers``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    buffers = buffers or BodyBuffers(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            buffers.take(len(chunk))
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    finally:
        buffers.give_back(size)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413, "body_too_large", f"the request body is {size} bytes or more; the limit is {limit}"
    )


async def read_images(
    request: Request, *, max_body: int, max_images: int, buffers: BodyBuffers | None = None
) -> RequestImages:
    """Read the images of a request in any of the three forms.

    Raises:
        ApiError: 413 (body or image count over the limit), 415 (another content type), 400 (no
            images, invalid JSON or base64), 422 (multipart fields other than ``image``).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, max_body, buffers)
    if media_type == "multipart/form-data":
        parsed = await _multipart(request, body, max_body, max_images)
    elif media_type == "application/json" or media_type.endswith("+json"):
        parsed = _json(body, max_images)
    elif media_type.startswith("image/") or media_type in _RAW_TYPES:
        parsed = RequestImages([body] if body else [], form="raw")
    else:
        shown = media_type or "no Content-Type"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{shown} is not accepted: send multipart/form-data with 'image' parts, "
            "application/json with base64 'images', or the image itself as image/*",
        )
    if not parsed.images:
        what = "the request body is empty" if not body else "the request holds no images"
        raise ApiError(400, "no_images", f"{what}; send at least one image")
    if len(parsed.images) > max_images:
        raise ApiError(
            413, "too_many_images", f"{len(parsed.images)} images sent; the limit is {max_images}"
        )
    return parsed


async def _multipart(
    request: Request, body: bytes, max_body: int, max_images: int
) -> RequestImages:
    async def stream():  # type: ignore[no-untyped-def]
        yield body

    parser = MultiPartParser(
        request.headers,
        stream(),
        max_part_size=max_body,
        max_files=max_images,
        max_fields=max_images,
    )
    parser.spool_max_size = max_body  # keep parts in memory: the body already is
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith(("Too many files", "Too many fields")):
            raise ApiError(
                413,
                "too_many_images",
                f"more than {max_images} parts sent; the limit is {max_images}",
            ) from None
        raise ApiError(
            400, "invalid_multipart", f"the multipart body cannot be parsed: {error.message}"
        ) from None
    try:
        images: list[bytes] = []
        for name, value in form.multi_items():
            if name != "image":
                raise ApiError(
                    422,
                    "unexpected_field",
                    f"multipart field {quote(name)} is not accepted: images go in parts named "
                    "'image', "
                    "options in the query string",
                )
            if isinstance(value, UploadFile):
                images.append(await value.read())
            else:
                images.append(value.encode("latin-1", errors="replace"))
        return RequestImages(images, form="multipart")
    finally:
        await form.close()


def _json(body: bytes, max_images: int) -> RequestImages:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ApiError(
            400, "invalid_json", 'the JSON body must be an object: {"images": [...], ...}'
        )
    images = payload.pop("images", None)
    if images is None:
        raise ApiError(400, "no_images", 'the JSON body has no "images" list')
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images):
        raise ApiError(400, "invalid_json", '"images" must be a list of base64 strings')
    if len(images) > max_images:
        raise ApiError(
            413, "too_many_images", f"{len(images)} images sent; the limit is {max_images}"
        )
    return RequestImages([_base64(item, i) for i, item in enumerate(images)], payload, form="json")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``: UTF-8, standard JSON only (no NaN or Infinity).

    Raises:
        ApiError: 400 ``invalid_json`` for anything that does not parse, however it fails
            (bad bytes, syntax, nesting too deep, integers of thousands of digits).
    """
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as error:
        reason = f"it is not UTF-8 (byte {error.start})"
    except RecursionError:
        reason = "it is nested too deeply"
    except json.JSONDecodeError as error:
        reason = f"{error.msg} at line {error.lineno} column {error.colno}"
    except ValueError as error:  # e.g. an integer over Python's digit limit
        reason = str(error).split(";")[0][:200]
    raise ApiError(400, "invalid_json", f"the body is not valid JSON: {reason}")


def _base64(text: str, index: int) -> bytes:
    data = _DATA_URL.sub("", text.strip(), count=1).encode("ascii", errors="replace")
    data = _WHITESPACE.sub(b"", data)
    data = data.translate(_URLSAFE) + b"=" * (-len(data) % 4)  # URL-safe alphabet, lost padding
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(
            400, "invalid_base64", f"image {index} is not valid base64: {error}"
        ) from None

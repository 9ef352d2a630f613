"""The client's logic without its I/O: requests to send, answers to read, when to wait and retry.

Every call is a generator that yields an :class:`httpx.Request` to send (and is sent back the
response, or has the transport error thrown in) or a :class:`Sleep` to wait out, and returns the
call's value. The sync and async clients are two small drivers of the same generators, so they
cannot drift apart.
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from explain_client.errors import (
    ApiError,
    ServiceTimeoutError,
    UnreachableError,
    retry_after,
)
from explain_client.results import Result

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "ImageInput",
    "Limits",
    "RetryPolicy",
    "Sleep",
    "Step",
    "as_payloads",
    "explain_call",
    "get_call",
    "ready_call",
]

DEFAULT_MAX_IMAGES = 64
"""Images per request until the service says otherwise (its default limit)."""

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray
"""An image: a file path, encoded bytes, a PIL image, or an ``(H, W)`` / ``(H, W, 3|4)`` uint8
array."""

_RETRY_STATUSES = (429, 503)
_RETRY_TRANSPORT = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)
_LIMIT = re.compile(r"limit is (\d+)")
_PART_OVERHEAD = 200  # multipart headers of one part, bytes


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds, then go on."""

    seconds: float


Step = httpx.Request | Sleep
Call = Generator[Step, Any, Any]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again.

    Attributes:
        max_retries: Tries after the first, for 429/503 answers and dropped or refused connections.
        backoff: First wait after a connection error, seconds; it doubles each time (with jitter).
        max_backoff: Longest wait after a connection error.
        max_retry_after: Longest ``Retry-After`` honoured; a longer one is cut to this.
    """

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff, max_backoff and max_retry_after must not be negative")

    def backoff_delay(self, attempt: int) -> float:
        delay = min(self.max_backoff, self.backoff * 2**attempt)
        return delay * random.uniform(0.5, 1.0)

    def answer_delay(self, attempt: int, answer: httpx.Response) -> float:
        """The wait before retrying a 429/503 answer: its ``Retry-After``, else the backoff."""
        seconds = retry_after(answer.headers)
        if seconds is None:
            return self.backoff_delay(attempt)
        return min(seconds, self.max_retry_after)


@dataclass
class Limits:
    """How much one request may carry; ``max_images`` is lowered when the service refuses more.

    Attributes:
        max_images: Images per request.
        max_body_bytes: Body size per request (a single larger image is still sent alone).
    """

    max_images: int = DEFAULT_MAX_IMAGES
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {self.max_images}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")

    def chunk(self, payloads: Sequence[bytes], start: int) -> int:
        """How many payloads from ``start`` fit in one request (at least one)."""
        size, body = 0, 0
        for payload in payloads[start : start + self.max_images]:
            body += len(payload) + _PART_OVERHEAD
            if size and body > self.max_body_bytes:
                break
            size += 1
        return size


def as_payloads(images: ImageInput | Sequence[ImageInput]) -> tuple[list[bytes], bool]:
    """Encoded bytes of each image, and whether ``images`` was a single image.

    Raises:
        TypeError: something that is not an image.
        ValueError: an array that is not uint8 ``(H, W)`` or ``(H, W, 3|4)``.
        OSError: a path that cannot be read.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [_payload(image, i) for i, image in enumerate(images)], False
    if isinstance(images, list | tuple):
        return [_payload(image, i) for i, image in enumerate(images)], False
    return [_payload(images, 0)], True


def _payload(image: Any, index: int) -> bytes:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        if (
            image.dtype != np.uint8
            or image.ndim not in (2, 3)
            or (image.ndim == 3 and image.shape[2] not in (3, 4))
        ):
            raise ValueError(
                f"images[{index}]: an array must be uint8 (H, W) or (H, W, 3|4), got "
                f"{image.dtype} {image.shape}"
            )
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    raise TypeError(
        f"images[{index}] is a {type(image).__name__}; pass a path, bytes, a PIL image or an array"
    )


def query(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Options as query parameters: ``None`` left out, lists repeated, booleans as JSON spells them."""
    params: list[tuple[str, str]] = []
    for name, value in options.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is None:
                continue
            params.append(
                (name, ("true" if item else "false") if isinstance(item, bool) else str(item))
            )
    return params


def exchange(build: Callable[[], httpx.Request], policy: RetryPolicy) -> Call:
    """Send the request ``build`` makes until it gets an answer that is not 429/503 or the tries
    run out; return that answer.

    Raises:
        UnreachableError: the connection failed on every try.
        ServiceTimeoutError: the service did not answer within the timeout.
    """
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield build()
        except _RETRY_TRANSPORT as error:
            if attempt >= policy.max_retries:
                raise UnreachableError(
                    f"no answer from {error.request.url} after {attempt + 1} tries: {error!r}"
                ) from error
            yield Sleep(policy.backoff_delay(attempt))
        except httpx.TimeoutException as error:
            raise ServiceTimeoutError(
                f"{error.request.url} did not answer in time ({type(error).__name__}); raise the "
                "client's timeout for slow methods such as scorecam"
            ) from error
        else:
            if response.status_code not in _RETRY_STATUSES or attempt >= policy.max_retries:
                return response
            yield Sleep(policy.answer_delay(attempt, response))
        attempt += 1


def get_call(http: httpx.Client | httpx.AsyncClient, path: str, policy: RetryPolicy) -> Call:
    """``GET path``; the decoded JSON.

    Raises:
        ApiError: an error answer.
    """
    response = yield from exchange(lambda: http.build_request("GET", path), policy)
    if response.status_code != 200:
        raise ApiError.from_response(response)
    return response.json()


def ready_call(http: httpx.Client | httpx.AsyncClient) -> Call:
    """``GET /readyz`` once: whether it answers 200.

    Raises:
        UnreachableError: no answer.
    """
    response = yield from exchange(lambda: http.build_request("GET", "/readyz"), RetryPolicy(0))
    return response.status_code == 200


def explain_call(
    http: httpx.Client | httpx.AsyncClient,
    endpoint: str,
    payloads: Sequence[bytes],
    options: Mapping[str, Any],
    policy: RetryPolicy,
    limits: Limits,
) -> Call:
    """``POST /{endpoint}`` for every payload, split into requests within ``limits``; one
    :class:`Result` per payload, in order. A 413 ``too_many_images`` answer teaches ``limits``
    the service's limit and the images are sent again in smaller requests; so does
    ``body_too_large`` for a request of several images.

    Raises:
        ApiError: an error answer (for the request that failed; earlier ones' results are lost).
    """
    params = query(options)
    results: list[Result] = []
    start = 0
    while start < len(payloads):
        size = limits.chunk(payloads, start)
        chunk = payloads[start : start + size]
        files = [
            ("image", (f"image{i}", data, "application/octet-stream"))
            for i, data in enumerate(chunk)
        ]
        response = yield from exchange(
            lambda files=files: http.build_request(
                "POST", f"/{endpoint}", params=params, files=files
            ),
            policy,
        )
        if response.status_code == 200:
            body = response.json()
            results.extend(Result.from_json(body["model"], answer) for answer in body["results"])
            start += size
            continue
        error = ApiError.from_response(response)
        if size > 1 and error.code == "too_many_images":
            match = _LIMIT.search(error.message)
            limits.max_images = max(1, min(size - 1, int(match.group(1)) if match else size // 2))
        elif size > 1 and error.code == "body_too_large":
            limits.max_body_bytes = max(1, sum(map(len, chunk)) // 2)
        else:
            raise error
    return results

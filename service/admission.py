"""Admission, cost and shutdown: what one request may cost, when it waits, when it is refused.

Every rule that bounds what a client can make the service spend lives here, so the routes only
call it:

- :func:`check_cost` caps what the options ask for (targets, layers, channels) before any image
  is decoded;
- :class:`DecodeBudget` bounds the memory of the images being decoded at once, keeping a quarter of
  it for small images so that they never wait behind big ones;
- :func:`guard` runs a step of a request against its deadline, the client's disconnection and
  the server's shutdown, cancelling the work that has not started;
- :func:`retry_after` turns an estimate of the queued work into an honest ``Retry-After``;
- :class:`MemoryTrimmer` hands freed decoding memory back to the system after big requests.

The model's queue itself, which admits work by its cost in forward passes, is
:class:`service.runtime.ModelWorker`; the connection-level limits (header and idle timeouts, the
bound on open connections) are :mod:`service.server`'s.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from pydantic import BaseModel

from explain.errors import ImageTooLargeError
from service.errors import ApiError, quote
from service.settings import Settings

__all__ = [
    "DecodeBudget",
    "MemoryTrimmer",
    "check_cost",
    "guard",
    "retry_after",
]

log = logging.getLogger("service")
T = TypeVar("T")


# -- what the options ask for -----------------------------------------------------------------------


def check_cost(options: BaseModel, settings: Settings) -> None:
    """Refuse options whose cost is beyond the per-request caps.

    Raises:
        ApiError: 413 ``too_many_targets`` or ``too_many_layers``; 422 ``invalid_option`` for
            ``max_channels`` beyond its limit.
    """
    targets = getattr(options, "target", None) or []
    if len(targets) > settings.max_targets:
        raise ApiError(
            413,
            "too_many_targets",
            f"{len(targets)} targets sent; at most {settings.max_targets} classes can be "
            "explained per image",
        )
    layers = getattr(options, "layers", None) or []
    distinct = list(dict.fromkeys(layers))
    if len(distinct) > settings.max_layers:
        raise ApiError(
            413,
            "too_many_layers",
            f"{len(distinct)} distinct layers sent; at most {settings.max_layers} per request",
        )
    channels = getattr(options, "max_channels", None)
    if channels is not None and channels > settings.max_channels:
        raise ApiError(
            422,
            "invalid_option",
            f"max_channels is {quote(channels)}; the limit is {settings.max_channels}",
        )


# -- decoding memory ----------------------------------------------------------------------------------


class DecodeBudget:
    """Memory for the images being decoded at once, in bytes, shared by every request.

    An image is *small* when it needs at most a quarter of the budget. Big images together may hold
    at most three quarters, so the last quarter is always there for small ones: a request of a few
    photos never waits behind a request of huge scans (which also decode on a thread of their own,
    see :class:`service.state.ServiceState`). One image may need at most three quarters; more is
    refused (413 ``image_too_large``) before it is decoded.

    Waiters are served in order, except that a waiter that does not fit yet does not hold back the
    ones behind it that do.
    """

    def __init__(self, total: int) -> None:
        if total < 4:
            raise ValueError(f"total must be at least 4 bytes, got {total}")
        self.total = total
        self.reserve = total // 4
        self.per_image = total - self.reserve
        self.used = 0
        self.large_used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def is_small(self, cost: int) -> bool:
        return cost <= self.reserve

    def _fits(self, cost: int) -> bool:
        if self.used + cost > self.total:
            return False
        return self.is_small(cost) or self.large_used + cost <= self.per_image

    def _take(self, cost: int) -> None:
        self.used += cost
        if not self.is_small(cost):
            self.large_used += cost

    def _give_back(self, cost: int) -> None:
        self.used -= cost
        if not self.is_small(cost):
            self.large_used -= cost
        for waiter in list(self._waiters):
            wanted, future = waiter
            if future.done():
                self._waiters.remove(waiter)
            elif self._fits(wanted):
                self._waiters.remove(waiter)
                self._take(wanted)
                future.set_result(None)

    @asynccontextmanager
    async def hold(self, cost: int, index: int = 0) -> AsyncIterator[None]:
        """Hold ``cost`` bytes while the block runs, waiting for room if need be.

        Raises:
            ImageTooLargeError: ``cost`` is more than one image may hold.
        """
        if cost > self.per_image:
            raise ImageTooLargeError(
                f"image {index} needs about {cost // 2**20} MiB to decode; one image may use "
                f"{self.per_image // 2**20} MiB"
            )
        if not self._waiters and self._fits(cost):
            self._take(cost)
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((cost, future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._give_back(cost)  # granted just as it was cancelled
                else:
                    future.cancel()
                raise
        try:
            yield
        finally:
            self._give_back(cost)


class MemoryTrimmer:
    """Hands memory freed by big decodes back to the system (glibc's ``malloc_trim``).

    glibc keeps freed heap memory of its arenas for reuse; after a request of huge images the
    process would keep gigabytes it no longer uses. Once the decoding budget is idle again after at
    least ``threshold`` bytes went through it, ``malloc_trim(0)`` returns the free pages. Elsewhere
    (another C library) this does nothing.
    """

    def __init__(self, threshold: int = 64 * 2**20) -> None:
        self.threshold = threshold
        self._since_trim = 0
        self._trim = _malloc_trim()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def decoded(self, cost: int) -> None:
        self._since_trim += cost

    def due(self, budget: DecodeBudget) -> bool:
        return self._trim is not None and budget.used == 0 and self._since_trim >= self.threshold

    def trim(self) -> None:
        """Run ``malloc_trim(0)`` (blocking: call it off the event loop)."""
        self._since_trim = 0
        if self._trim is not None:
            self._trim(0)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


# -- time, disconnection and shutdown ----------------------------------------------------------------


async def guard(
    work: Awaitable[T],
    *,
    timeout: float,
    on_timeout: Callable[[], ApiError],
    watch: dict[Awaitable[Any], Callable[[], ApiError]] | None = None,
) -> T:
    """Await ``work`` for at most ``timeout`` seconds, or until one of ``watch`` completes first
    (e.g. the client disconnecting, the server stopping); then ``work`` is cancelled, which takes
    its jobs that have not started off the model's queue, and the matching error is raised.

    Raises:
        ApiError: ``on_timeout()`` or the error of the watch that fired.
    """
    task = asyncio.ensure_future(work)
    watchers = {asyncio.ensure_future(event): error for event, error in (watch or {}).items()}
    try:
        done, _ = await asyncio.wait(
            [task, *watchers], timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        fired = next((watchers[w] for w in watchers if w in done), on_timeout)
        raise fired()
    finally:
        for pending in (task, *watchers):
            pending.cancel()
        for pending in (task, *watchers):
            with suppress(asyncio.CancelledError, Exception):
                await pending


def retry_after(wait_seconds: float, settings: Settings) -> str:
    """``Retry-After`` for a queue that needs ``wait_seconds`` to drain: at least the configured
    seconds, at most the request deadline (queued work older than that has been given up)."""
    if not math.isfinite(wait_seconds):
        wait_seconds = settings.request_timeout_s
    seconds = min(
        max(math.ceil(wait_seconds), settings.retry_after_seconds), settings.request_timeout_s
    )
    return str(math.ceil(seconds))

"""The running service: its models (loaded in the background), their workers, the I/O thread pool."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from PIL import Image

from explain.errors import UnknownModelError
from explain.machine import CoreShare, available_cores
from explain.models import LoadedModel, load_model, parse_spec
from explain.tasks import TaskRunner
from service.admission import DecodeBudget, MemoryTrimmer
from service.errors import ApiError
from service.inputs import BodyBuffers
from service.metrics import Metrics
from service.runtime import ModelWorker
from service.settings import Settings

__all__ = ["ServedModel", "ServiceState"]

log = logging.getLogger("service")
T = TypeVar("T")


@dataclass(eq=False)
class ServedModel:
    loaded: LoadedModel
    worker: ModelWorker
    runner: TaskRunner

    @property
    def name(self) -> str:
        return self.loaded.name


class ServiceState:
    """Owns everything with a lifetime: models, hooks, worker threads, the I/O pool.

    :meth:`start` returns at once and loads the models on a background thread; until every model is
    loaded and warmed up, :attr:`ready` is false and explanation requests get 503 ``not_ready``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        self.status = "starting"
        self.error: str | None = None
        self.failed: dict[str, str] = {}
        self.on_fatal: Callable[[str], None] = lambda error: None
        """Called (on the loader thread) when a model fails to load and partial start is off."""
        self.budget = DecodeBudget(settings.decode_budget_bytes)
        self.trimmer = MemoryTrimmer()
        self.bodies = BodyBuffers(max(settings.max_body_buffer_bytes, settings.max_body_bytes))
        self.stopping = asyncio.Event()
        self.shutdown_started: float | None = None
        self._io: ThreadPoolExecutor | None = None
        self._large: ThreadPoolExecutor | None = None
        self._loader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._torch_threads_before = torch.get_num_threads()
        self.batch_threads = 1
        self.cores: CoreShare | None = None

    # -- lifetime ---------------------------------------------------------------------------------

    def start(self) -> None:
        # Every image is checked against max_image_pixels from its header before decoding
        # (service.images); Pillow's process-wide check would warn or refuse at another limit.
        Image.MAX_IMAGE_PIXELS = None
        self._torch_threads_before = torch.get_num_threads()
        self.batch_threads, torch_threads = self.settings.thread_plan()
        torch.set_num_threads(torch_threads)
        self.cores = CoreShare(available_cores(), self.settings.torch_threads)
        log.info(
            "%d batch thread(s) per model, %s",
            self.batch_threads,
            self.cores.describe(self.batch_threads),
        )
        self._io = ThreadPoolExecutor(self.settings.io_threads, thread_name_prefix="io")
        # Big images decode on a thread of their own, so small ones never queue behind them.
        self._large = ThreadPoolExecutor(1, thread_name_prefix="decode-large")
        self.status = "loading"
        self._loader = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
        self._loader.start()

    def begin_shutdown(self) -> None:
        """Stop taking work (call on the event loop): new and queued work gets 503
        ``shutting_down``, request bodies still arriving are cut short, running batches go on."""
        if self.shutdown_started is None:
            self.shutdown_started = time.monotonic()
        if self.status != "stopped":
            self.status = "stopping"
        self.metrics.ready.set(0)
        self.stopping.set()
        self._stopping.set()
        for served in list(self.models.values()):
            served.worker.close()

    async def shutdown_deadline(self, margin: float = 0.5) -> None:
        """Returns ``margin`` seconds before the shutdown deadline (never, while not stopping):
        work still running then is answered 503 before the server closes its connections."""
        await self.stopping.wait()
        await asyncio.sleep(max(0.0, self.shutdown_left() - margin))

    def shutdown_left(self) -> float:
        """Seconds left of ``shutdown_timeout_s`` since the shutdown began."""
        began = self.shutdown_started or time.monotonic()
        return max(0.0, began + self.settings.shutdown_timeout_s - time.monotonic())

    def stop(self, timeout: float | None = None) -> None:
        """Release everything, waiting at most ``timeout`` seconds for running batches."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        self.status = "stopping"
        if self._loader is not None:
            self._loader.join(None if deadline is None else max(0.1, deadline - time.monotonic()))
        finished = True
        for served in list(self.models.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if served.worker.stop(left):
                served.loaded.close()
            else:
                finished = False
                log.warning("model %s: a batch was still running at the deadline", served.name)
        self.models.clear()
        for pool in (self._io, self._large):
            if pool is not None:
                pool.shutdown(wait=finished and deadline is None, cancel_futures=True)
        self.status = "stopped"
        self.metrics.ready.set(0)
        torch.set_num_threads(self._torch_threads_before)

    @property
    def ready(self) -> bool:
        return self.status in ("ready", "partial")

    def _load_all(self) -> None:
        for spec in self.settings.models:
            if self._stopping.is_set():
                return
            try:
                loaded = load_model(spec)
                if loaded.name in self.models:
                    loaded.close()
                    raise ValueError(f"model {loaded.name!r} is configured twice")
                self.models[loaded.name] = self._serve(loaded)
                log.info("model %s loaded (%s)", loaded.name, loaded.weights)
            except Exception as error:
                log.exception("loading model %s failed", spec)
                self.failed[parse_spec(spec)[0]] = f"{type(error).__name__}: {error}"
                self.error = f"{spec}: {type(error).__name__}: {error}"
                if not self.settings.allow_partial_start:
                    self.status = "failed"
                    self.on_fatal(self.error)
                    return
        if not self.models:
            self.status = "failed"
            self.on_fatal(self.error or "no model loaded")
            return
        self.status = "partial" if self.failed else "ready"
        self.metrics.ready.set(1)
        log.info("%s: %s", self.status, ", ".join(self.models))

    def _serve(self, loaded: LoadedModel) -> ServedModel:
        scorecam_channels = self.settings.scorecam_max_channels or None
        runner = TaskRunner(
            loaded,
            {"scorecam": {"max_channels": scorecam_channels}},
            optimize=self.settings.optimize,
        )
        runner.build_graphs()  # seconds of exporting and checking: no part of the model's pace
        warm_started = time.perf_counter()
        runner.warm_up()
        # The warm-up's pace, as forward passes per second, until real batches are measured.
        warm_cost = 2 * (1 + bool(loaded.feature_layers) + bool(loaded.target_layer))
        warm_rate = warm_cost / max(time.perf_counter() - warm_started, 1e-3)
        settings, metrics, name = self.settings, self.metrics, loaded.name

        def on_batch(task: Any, images: int, requests: int, seconds: float) -> None:
            metrics.batch_size.labels(name, task.kind).observe(images)
            metrics.batch_requests.labels(name, task.kind).observe(requests)
            metrics.inference.labels(name, task.kind).observe(seconds)

        worker = ModelWorker(
            name,
            runner,
            max_batch=settings.max_batch_size,
            max_wait=settings.max_batch_wait_ms / 1000,
            queue_size=settings.queue_size,
            threads=self.batch_threads,
            cores=self.cores,
            on_batch=on_batch,
            on_depth=lambda images, cost: metrics.queue_depth.labels(name).set(images),
            rate=warm_rate,
        )
        worker.start()
        return ServedModel(loaded, worker, runner)

    # -- use --------------------------------------------------------------------------------------

    @property
    def default_model(self) -> str:
        return parse_spec(self.settings.models[0])[0]

    def model(self, name: str | None) -> ServedModel:
        """The served model ``name`` (default: the first configured).

        Raises:
            ApiError: 503 ``not_ready`` while loading (or after loading failed).
            UnknownModelError: no loaded model has that name.
        """
        if self.stopping.is_set():
            raise ApiError(
                503,
                "shutting_down",
                "the service is shutting down; retry on another instance",
                {"Retry-After": str(self.settings.retry_after_seconds), "Connection": "close"},
            )
        if not self.ready:
            raise ApiError(
                503,
                "not_ready",
                "the models are still loading; retry shortly"
                if self.status == "loading"
                else f"the service is not ready ({self.status}): {self.error or 'see the logs'}",
                {"Retry-After": str(self.settings.retry_after_seconds)},
            )
        name = name or self.default_model
        if name in self.failed:
            raise ApiError(503, "not_ready", f"model {name!r} failed to load: {self.failed[name]}")
        if name not in self.models:
            raise UnknownModelError(name, self.models)
        return self.models[name]

    async def run_io(self, function: Callable[..., T], *args: Any, large: bool = False) -> T:
        """Run blocking image work (decoding, PNG encoding) off the event loop: on the I/O pool,
        or with ``large``, on the thread kept for big images."""
        pool = self._large if large else self._io
        assert pool is not None  # started by the lifespan; not input validation
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

"""The running service: its models (loaded in the background), their workers, the I/O thread pool."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from PIL import Image

from explain.errors import UnknownModelError
from explain.models import LoadedModel, load_model, parse_spec
from explain.tasks import TaskRunner
from service.errors import ApiError
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
        self._io: ThreadPoolExecutor | None = None
        self._loader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._torch_threads_before = torch.get_num_threads()
        self.batch_threads = 1

    # -- lifetime ---------------------------------------------------------------------------------

    def start(self) -> None:
        # Every image is checked against max_image_pixels from its header before decoding
        # (service.images); Pillow's process-wide check would warn or refuse at another limit.
        Image.MAX_IMAGE_PIXELS = None
        self._torch_threads_before = torch.get_num_threads()
        self.batch_threads, torch_threads = self.settings.thread_plan()
        torch.set_num_threads(torch_threads)
        log.info(
            "%d batch thread(s) per model, %d torch thread(s) each",
            self.batch_threads,
            torch_threads,
        )
        self._io = ThreadPoolExecutor(self.settings.io_threads, thread_name_prefix="io")
        self.status = "loading"
        self._loader = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
        self._loader.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._loader is not None:
            self._loader.join()
        for served in self.models.values():
            served.worker.stop()
            served.loaded.close()
        self.models.clear()
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
        self.status = "stopped"
        self.metrics.ready.set(0)
        torch.set_num_threads(self._torch_threads_before)

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def _load_all(self) -> None:
        try:
            for spec in self.settings.models:
                if self._stopping.is_set():
                    return
                loaded = load_model(spec)
                if loaded.name in self.models:
                    loaded.close()
                    raise ValueError(f"model {loaded.name!r} is configured twice")
                self.models[loaded.name] = self._serve(loaded)
                log.info("model %s loaded (%s)", loaded.name, loaded.weights)
        except Exception as error:
            log.exception("loading models failed")
            self.error = f"{type(error).__name__}: {error}"
            self.status = "failed"
            return
        self.status = "ready"
        self.metrics.ready.set(1)
        log.info("ready: %s", ", ".join(self.models))

    def _serve(self, loaded: LoadedModel) -> ServedModel:
        scorecam_channels = self.settings.scorecam_max_channels or None
        runner = TaskRunner(loaded, {"scorecam": {"max_channels": scorecam_channels}})
        runner.warm_up()
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
            on_batch=on_batch,
            on_depth=metrics.queue_depth.labels(name).set,
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
        if name not in self.models:
            raise UnknownModelError(name, self.models)
        return self.models[name]

    async def run_io(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking image work (decoding, PNG encoding) on the I/O pool, off the event loop."""
        assert self._io is not None  # started by the lifespan; not input validation
        return await asyncio.get_running_loop().run_in_executor(self._io, function, *args)

"""The ``local`` engine: the library in this process. Files are read and decoded and PNGs encoded
on I/O threads while the model runs batches on threads of its own, as in the service."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from explain.machine import CoreShare, available_cores, thread_plan
from explain_batch.engines import EngineOption, Outcome, RunConfig
from explain_batch.engines.window import score_in_batches
from explain_batch.options import positive_int
from explain_batch.scorer import Prepared, Scorer

__all__ = ["DEFAULT_BATCH_SIZE", "OPTIONS", "LocalEngine", "open_engine"]

DEFAULT_BATCH_SIZE = 2
"""Images per model call: with two batch threads of one torch thread each (the thread plan on 2
cores), batches of 2 reach the raw batched forward throughput; 8 fall to 0.75x (docs/benchmarks.md)."""

OPTIONS = (
    EngineOption(
        ("--io-threads",),
        {
            "type": positive_int,
            "default": 2,
            "metavar": "N",
            "help": "local: threads decoding images and encoding PNGs beside the model (default 2)",
        },
    ),
)

T = TypeVar("T")
R = TypeVar("R")


def _then(future: Future[T], pool: ThreadPoolExecutor, step: Callable[[T], R]) -> Future[R]:
    """A future of ``step(future.result())``, run on ``pool`` once ``future`` is done."""
    chained: Future[R] = Future()

    def settled(done: Future[Any]) -> bool:
        """Pass a cancellation or an error on to ``chained``; whether ``done`` has a value."""
        if done.cancelled():
            chained.cancel()
        elif (error := done.exception()) is not None:
            chained.set_exception(error)
        else:
            return True
        return False

    def finish(done: Future[R]) -> None:
        if settled(done):
            chained.set_result(done.result())

    def start(done: Future[T]) -> None:
        if settled(done):
            pool.submit(step, done.result()).add_done_callback(finish)

    future.add_done_callback(start)
    return chained


class LocalEngine:
    """Scores batches with a :class:`~explain_batch.scorer.Scorer` in this process.

    Each submitted batch is decoded on the I/O pool, run on one of the model's batch threads
    (every core for a batch that runs alone, the cores shared between batches that run side by
    side, as the service does), then rendered and encoded on
    the I/O pool; :attr:`max_pending` batches in flight keep every stage busy and memory bounded.
    """

    def __init__(self, config: RunConfig, io_threads: int = 2) -> None:
        if io_threads < 1:
            raise ValueError(f"io_threads must be at least 1, got {io_threads}")
        self.batch_size = config.batch_size or DEFAULT_BATCH_SIZE
        batch_threads, self.torch_threads = thread_plan()
        self.cores = CoreShare(available_cores())
        self._torch_threads_before = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            self.scorer = Scorer(config)
        except BaseException:
            torch.set_num_threads(self._torch_threads_before)
            raise
        self.model = self.scorer.model
        self.max_pending = batch_threads + io_threads + 1
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="batch-io")
        self._model = ThreadPoolExecutor(batch_threads, thread_name_prefix="batch-model")

    def score(self, paths: Iterable[str]) -> Generator[Outcome, None, None]:
        return score_in_batches(paths, self.submit, self.batch_size, self.max_pending)

    def submit(self, paths: list[str]) -> Future[list[Outcome]]:
        """Start one batch; its outcomes once it is done."""
        decoding = [self._io.submit(self.scorer.read, path) for path in paths]
        ran = self._model.submit(self._forward, decoding)
        return _then(ran, self._io, self.scorer.finish)

    def _forward(self, decoding: list[Future[Prepared]]) -> Any:
        prepared = [future.result() for future in decoding]
        with self.cores.batch():
            return self.scorer.forward(prepared)

    def close(self) -> None:
        self._model.shutdown(wait=True, cancel_futures=True)
        self._io.shutdown(wait=True, cancel_futures=True)
        self.scorer.close()
        torch.set_num_threads(self._torch_threads_before)


def open_engine(config: RunConfig) -> LocalEngine:
    """Load the model and check the options.

    Raises:
        UsageError: an unknown model or an option the endpoint refuses.
    """
    return LocalEngine(config, io_threads=config.engine_options.get("io_threads", 2))

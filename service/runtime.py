"""Micro-batching: one worker thread per model gathers concurrent requests into batches.

Requests become *jobs* (a task, an input batch, per-image targets). The worker takes the oldest
job, gathers the waiting jobs with an equal task (same kind, method and layers) up to
``max_batch`` images, waiting at most ``max_wait`` after the oldest one arrived, and runs them as one
model call. While a batch runs, new jobs queue up, so under load batches fill without waiting.

The queue is bounded by cost, not by images: each job carries its cost in forward passes of the
model, and a request whose jobs do not fit is refused at once (:class:`QueueFullError`), with an
estimate of how long the queued work takes at the rate the worker has measured. A cancelled job
leaves the queue at once and is never run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

from explain.errors import ExplainError
from explain.machine import CoreShare

__all__ = ["BatchStats", "Job", "JobResult", "ModelWorker", "QueueFullError", "WorkerStoppedError"]

log = logging.getLogger("service.runtime")

Output = TypeVar("Output")
Runner = Callable[[Hashable, torch.Tensor, list[Any]], Sequence[Output]]
"""``run(task, inputs, per-image targets) -> one output per image``."""


class QueueFullError(Exception):
    """The model's queue cannot take the job now; retry after :attr:`wait_seconds`."""

    def __init__(self, message: str, wait_seconds: float) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


class WorkerStoppedError(Exception):
    """The worker is shutting down."""


@dataclass(frozen=True)
class BatchStats:
    """How a job was run: the batch it joined and the time it spent."""

    images: int
    requests: int
    queue_seconds: float
    inference_seconds: float


@dataclass(frozen=True)
class JobResult(Generic[Output]):
    outputs: list[Output]
    stats: BatchStats


@dataclass(eq=False)
class Job:
    task: Hashable
    inputs: torch.Tensor
    targets: list[Any]
    cost: float = 1.0
    """Forward passes of the model the whole job takes."""
    future: Future[JobResult[Any]] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return len(self.inputs)


class ModelWorker:
    """Runs one model's jobs in batches on threads of its own.

    Args:
        name: Model name (thread name, messages).
        run: Runs one batch; see :data:`Runner`.
        max_batch: Most images per batch (a single larger job runs alone).
        max_wait: Seconds a batch may wait for more jobs after its oldest job arrived.
        queue_size: Most work waiting, in forward passes; beyond it :meth:`submit` raises
            :class:`QueueFullError` (an empty queue takes any job, so that every job can run).
        threads: Batches run at once, each on its own thread (``run`` must allow it). On a small
            CPU model, two single-threaded batches in parallel can beat one batch on two threads.
        cores: Sets each batch's torch threads as it starts (a batch alone gets every core,
            batches side by side share them); ``None``: torch's setting is left alone.
        on_batch: Told of each batch run: ``(task, images, requests, seconds)``.
        on_depth: Told of the number of images and the cost waiting whenever they change.
        rate: The forward passes per second expected before any batch has been measured.
    """

    def __init__(
        self,
        name: str,
        run: Runner[Any],
        *,
        max_batch: int,
        max_wait: float,
        queue_size: int,
        threads: int = 1,
        cores: CoreShare | None = None,
        on_batch: Callable[[Hashable, int, int, float], None] = lambda *args: None,
        on_depth: Callable[[int, float], None] = lambda images, cost: None,
        rate: float = 10.0,
    ) -> None:
        self.name = name
        self._run = run
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._queue_size = queue_size
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._pending: deque[Job] = deque()
        self._waiting_images = 0
        self._waiting_cost = 0.0
        self._running_cost = 0.0
        self._threads_count = threads
        self._cores = cores
        self._rate = rate  # forward passes per second, all threads together
        self._condition = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"model-{name}-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Refuse new jobs and fail the waiting ones; running batches go on to the end."""
        with self._condition:
            self._stopping = True
            abandoned = list(self._pending)
            self._pending.clear()
            self._set_waiting(0, 0.0)
            self._condition.notify_all()
        for job in abandoned:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(
                    WorkerStoppedError(f"model {self.name!r} is shutting down")
                )

    def stop(self, timeout: float | None = 30.0) -> bool:
        """:meth:`close`, then wait up to ``timeout`` seconds for the running batches to end.

        Returns:
            Whether every worker thread ended in time.
        """
        self.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def waiting_images(self) -> int:
        return self._waiting_images

    @property
    def waiting_cost(self) -> float:
        return self._waiting_cost

    @property
    def rate(self) -> float:
        """Forward passes per second, all batch threads together, as last measured."""
        return self._rate

    def wait_estimate(self, extra: float = 0.0) -> float:
        """Seconds until the queued and running work, plus ``extra``, is done at the measured rate."""
        return (self._waiting_cost + self._running_cost + extra) / self._rate

    def submit(
        self, task: Hashable, inputs: torch.Tensor, targets: list[Any], cost: float = 1.0
    ) -> Future[JobResult[Any]]:
        """Queue a job of ``cost`` forward passes per image; the future resolves to its outputs
        or to the exception that stopped it. See :meth:`submit_many`."""
        return self.submit_many(task, inputs, targets, cost, chunk=len(inputs))[0]

    def submit_many(
        self,
        task: Hashable,
        inputs: torch.Tensor,
        targets: list[Any],
        cost: float = 1.0,
        chunk: int | None = None,
    ) -> list[Future[JobResult[Any]]]:
        """Queue the images as jobs of at most ``chunk`` images, all or none, at ``cost`` forward
        passes per image. The default chunk is a batch's worth of forward passes (one image for a
        method that runs the model many times), so that work given up is dropped in small steps.
        Cancelling a job's future takes it off the queue.

        Raises:
            QueueFullError: the queue has no room for their cost.
            WorkerStoppedError: the worker is stopping.
        """
        if len(inputs) != len(targets):
            raise ValueError(f"targets has {len(targets)} entries for {len(inputs)} images")
        size = max(1, chunk or int(self._max_batch / max(cost, 1.0)))
        jobs = [
            Job(task, inputs[i : i + size], targets[i : i + size], cost * len(inputs[i : i + size]))
            for i in range(0, len(inputs), size)
        ]
        total = sum(job.cost for job in jobs)
        with self._condition:
            if self._stopping:
                raise WorkerStoppedError(f"model {self.name!r} is shutting down")
            if self._pending and self._waiting_cost + total > self._queue_size:
                raise QueueFullError(
                    f"model {self.name!r} has {math.ceil(self._waiting_cost)} forward passes of "
                    f"work waiting and this request adds {math.ceil(total)} "
                    f"(limit {self._queue_size})",
                    self.wait_estimate(),
                )
            for job in jobs:
                self._pending.append(job)
            self._set_waiting(self._waiting_images + len(inputs), self._waiting_cost + total)
            self._condition.notify_all()
        for job in jobs:
            job.future.add_done_callback(lambda future, job=job: self._forget(job, future))
        return [job.future for job in jobs]

    def _forget(self, job: Job, future: Future[Any]) -> None:
        """A cancelled job leaves the queue at once: its cost no longer counts, it never runs."""
        if not future.cancelled():
            return
        with self._condition:
            if job in self._pending:
                self._pending.remove(job)
                self._set_waiting(self._waiting_images - job.size, self._waiting_cost - job.cost)

    # -- the worker thread ------------------------------------------------------------------------

    def _set_waiting(self, images: int, cost: float) -> None:
        self._waiting_images = images
        self._waiting_cost = max(0.0, cost) if images else 0.0
        self._on_depth(images, self._waiting_cost)

    def _select(self, task: Hashable) -> list[Job]:
        chosen: list[Job] = []
        images = 0
        for job in self._pending:
            if job.task == task and (not chosen or images + job.size <= self._max_batch):
                chosen.append(job)
                images += job.size
                if images >= self._max_batch:
                    break
        return chosen

    def _next_batch(self) -> list[Job] | None:
        with self._condition:
            while not self._pending and not self._stopping:
                self._condition.wait()
            if not self._pending:
                return None
            first = self._pending[0]
            deadline = first.enqueued + self._max_wait
            while True:
                batch = self._select(first.task)
                remaining = deadline - time.perf_counter()
                full = sum(job.size for job in batch) >= self._max_batch
                if self._stopping or full or remaining <= 0:
                    break
                self._condition.wait(remaining)
            for job in batch:
                self._pending.remove(job)
            self._set_waiting(
                self._waiting_images - sum(job.size for job in batch),
                self._waiting_cost - sum(job.cost for job in batch),
            )
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            cost = sum(job.cost for job in live)
            with self._condition:
                self._running_cost += cost
            started = time.perf_counter()
            try:
                with contextlib.nullcontext() if self._cores is None else self._cores.batch():
                    self._execute(live)
            finally:
                seconds = time.perf_counter() - started
                with self._condition:
                    self._running_cost -= cost
                    if seconds > 0:
                        self.measured(cost, seconds)

    def measured(self, cost: float, seconds: float) -> None:
        """Fold one batch of ``cost`` forward passes that took ``seconds`` on one thread into the
        rate (a moving average; the threads run side by side)."""
        sample = cost / seconds * self._threads_count
        self._rate = 0.7 * self._rate + 0.3 * sample

    def _execute(self, jobs: list[Job]) -> None:
        task = jobs[0].task
        inputs = jobs[0].inputs if len(jobs) == 1 else torch.cat([job.inputs for job in jobs])
        targets = [target for job in jobs for target in job.targets]
        started = time.perf_counter()
        try:
            outputs = list(self._run(task, inputs, targets))
        except ExplainError as error:  # a property of the task, the same for every job in it
            for job in jobs:
                job.future.set_exception(error)
            return
        except Exception as error:
            if len(jobs) > 1:  # find the job that fails without failing the others
                log.warning(
                    "batch of %d jobs failed (%r); running them one by one", len(jobs), error
                )
                for job in jobs:
                    self._execute([job])
                return
            log.exception("model %r failed on a job", self.name)
            jobs[0].future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        self._on_batch(task, len(inputs), len(jobs), seconds)
        offset = 0
        for job in jobs:
            stats = BatchStats(len(inputs), len(jobs), started - job.enqueued, seconds)
            job.future.set_result(JobResult(outputs[offset : offset + job.size], stats))
            offset += job.size

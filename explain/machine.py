"""The CPU this process may use, and how to split it between model batches and torch's threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from explain.cgroups import cgroup_cpu_limit

__all__ = ["CoreShare", "available_cores", "thread_plan"]


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, narrowed by its cgroup's CPU quota (v1 or v2,
    what ``docker run --cpus`` and compose's ``cpus`` set), rounded down, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return max(1, min(cores, int(quota))) if quota else cores


def thread_plan(
    batch_threads: int = 0, torch_threads: int = 0, cores: int | None = None
) -> tuple[int, int]:
    """``(batch_threads, torch_threads)`` with the automatic values (0) worked out from ``cores``
    (default: :func:`available_cores`).

    Two batches side by side, each on half the cores, beat one batch on all of them for the
    models served here: intra-op parallelism of one small batch leaves cores idle
    (docs/benchmarks.md). The automatic ``torch_threads`` is the count when every batch thread is
    busy; :class:`CoreShare` gives a batch that runs alone every core.

    Raises:
        ValueError: a negative count.
    """
    if batch_threads < 0 or torch_threads < 0:
        raise ValueError(
            f"batch_threads and torch_threads must be 0 (automatic) or more, got "
            f"{batch_threads} and {torch_threads}"
        )
    cores = cores or available_cores()
    batch_threads = batch_threads or (2 if cores >= 2 else 1)
    torch_threads = torch_threads or max(1, cores // batch_threads)
    return batch_threads, torch_threads


class CoreShare:
    """Shares the cores between batches that run side by side on threads of their own.

    A batch that starts while no other runs gets every core; one that starts beside others gets
    its share (``cores // running``, at least 1). The count is set with
    ``torch.set_num_threads`` on the batch's own thread, which with torch's OpenMP backend is a
    per-thread setting (and costs well under a microsecond), and which the optimised graphs of
    :mod:`explain.inference` follow too. A batch keeps its count to its end.

    Args:
        cores: The cores to share; default: :func:`available_cores`.
        fixed: Threads for every batch instead (0: share).

    Raises:
        ValueError: a negative ``fixed``.
    """

    def __init__(self, cores: int | None = None, fixed: int = 0) -> None:
        if fixed < 0:
            raise ValueError(f"fixed must be 0 (share the cores) or more, got {fixed}")
        self.cores = cores or available_cores()
        self.fixed = fixed
        self._running = 0
        self._lock = threading.Lock()

    def threads_for(self, running: int) -> int:
        """Threads for a batch that starts while ``running`` batches (itself included) run."""
        return self.fixed or max(1, self.cores // max(1, running))

    def describe(self, batch_threads: int) -> str:
        """The plan in words, for a log line."""
        if self.fixed:
            return f"{self.fixed} torch thread(s) per batch"
        counts = (f"{self.threads_for(n)} with {n} running" for n in range(1, batch_threads + 1))
        return "torch threads per batch: " + ", ".join(counts)

    @property
    def running(self) -> int:
        """Batches running now."""
        return self._running

    @contextmanager
    def batch(self) -> Iterator[int]:
        """Run a batch in the block: sets this thread's torch threads, yields the count."""
        with self._lock:
            self._running += 1
            threads = self.threads_for(self._running)
        try:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            yield threads
        finally:
            with self._lock:
                self._running -= 1

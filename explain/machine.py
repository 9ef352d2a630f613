"""The CPU this process may use, and how to split it between model batches and torch's threads."""

from __future__ import annotations

import os

from explain.cgroups import cgroup_cpu_limit

__all__ = ["available_cores", "thread_plan"]


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
    (docs/benchmarks.md).

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

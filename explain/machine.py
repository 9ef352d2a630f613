"""The CPU this process may use, and how to split it between model batches and torch's threads."""

from __future__ import annotations

import os

__all__ = ["available_cores", "thread_plan"]


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, narrowed by a cgroup v2 CPU quota (what
    ``docker run --cpus`` and compose's ``cpus`` set)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
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


def _cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    try:
        with open(path, encoding="ascii") as file:
            limit, period = file.read().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return int(limit) / int(period)

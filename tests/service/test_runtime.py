"""The micro-batching worker, on its own: grouping, limits, isolation, shutdown."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
import torch

from explain.errors import MethodNotApplicableError
from service.runtime import ModelWorker, QueueFullError, WorkerStoppedError


@dataclass(frozen=True)
class Task:
    name: str


class Recorder:
    """A runner that returns each input's first value (times ten) and records every batch."""

    def __init__(self, gate: threading.Event | None = None, fail_on: float | None = None) -> None:
        self.batches: list[tuple[str, list[float]]] = []
        self.gate = gate
        self.fail_on = fail_on
        self.started = threading.Event()

    def __call__(self, task, inputs, targets):
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        values = inputs[:, 0].tolist()
        self.batches.append((task.name, values))
        if task.name == "not-applicable":
            raise MethodNotApplicableError("not for this model")
        if self.fail_on in values:
            raise RuntimeError("a bad input")
        return [v * 10 for v in values]


def job(value: float, size: int = 1) -> torch.Tensor:
    return torch.full((size, 1), float(value))


def worker_with(runner, **options) -> ModelWorker:
    settings = {"max_batch": 4, "max_wait": 0.05, "queue_size": 100} | options
    worker = ModelWorker("test", runner, **settings)
    worker.start()
    return worker


def test_concurrent_jobs_with_the_same_task_share_a_batch():
    gate = threading.Event()
    runner = Recorder(gate)
    worker = worker_with(runner)
    first = worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)  # the first batch is running; the rest queue up behind it
    futures = [worker.submit(Task("a" if i % 2 else "b"), job(i), [None]) for i in range(1, 8)]
    gate.set()
    results = [f.result(5) for f in [first, *futures]]
    worker.stop()
    assert [r.outputs for r in results] == [[i * 10.0] for i in range(8)]
    # Oldest job first (1, task a), gathering its task's jobs; task b's jobs wait their turn.
    assert runner.batches == [("a", [0.0]), ("a", [1.0, 3.0, 5.0, 7.0]), ("b", [2.0, 4.0, 6.0])]
    stats = results[1].stats
    assert (stats.images, stats.requests) == (4, 4)


def test_the_oldest_job_goes_first_and_batches_respect_the_size_limit():
    gate = threading.Event()
    runner = Recorder(gate)
    worker = worker_with(runner, max_batch=3)
    worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)
    futures = [worker.submit(Task("a"), job(i, size=2), [None, None]) for i in range(1, 4)]
    gate.set()
    for future in futures:
        future.result(5)
    worker.stop()
    assert [len(values) for _, values in runner.batches] == [1, 2, 2, 2]  # 2 + 2 > 3


def test_a_job_larger_than_a_batch_runs_alone():
    runner = Recorder()
    worker = worker_with(runner, max_batch=2)
    result = worker.submit(Task("a"), job(5, size=6), [None] * 6).result(5)
    worker.stop()
    assert result.outputs == [50.0] * 6 and result.stats.images == 6


def test_a_lone_job_waits_at_most_max_wait():
    runner = Recorder()
    worker = worker_with(runner, max_batch=8, max_wait=0.02)
    started = time.perf_counter()
    worker.submit(Task("a"), job(1), [None]).result(5)
    assert time.perf_counter() - started < 1.0
    worker.stop()


def test_a_full_queue_refuses_and_recovers():
    gate = threading.Event()
    runner = Recorder(gate)
    worker = worker_with(runner, queue_size=3, max_batch=1)
    running = worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)
    waiting = [worker.submit(Task("a"), job(i), [None]) for i in (1, 2, 3)]
    with pytest.raises(QueueFullError, match="3 forward passes of work waiting"):
        worker.submit(Task("a"), job(4), [None])
    assert worker.waiting_images == 3
    gate.set()
    assert [f.result(5).outputs for f in [running, *waiting]] == [[0.0], [10.0], [20.0], [30.0]]
    assert worker.submit(Task("a"), job(5), [None]).result(5).outputs == [50.0]
    worker.stop()


def test_a_failing_job_does_not_fail_the_others_in_its_batch():
    gate = threading.Event()
    runner = Recorder(gate, fail_on=2.0)
    worker = worker_with(runner)
    worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)
    futures = {i: worker.submit(Task("a"), job(i), [None]) for i in (1, 2, 3)}
    gate.set()
    assert futures[1].result(5).outputs == [10.0]
    assert futures[3].result(5).outputs == [30.0]
    with pytest.raises(RuntimeError, match="a bad input"):
        futures[2].result(5)
    worker.stop()


def test_a_library_error_of_the_task_reaches_every_job_of_the_batch():
    gate = threading.Event()
    runner = Recorder(gate)
    worker = worker_with(runner)
    worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)
    futures = [worker.submit(Task("not-applicable"), job(i), [None]) for i in (1, 2)]
    gate.set()
    for future in futures:
        with pytest.raises(MethodNotApplicableError):
            future.result(5)
    assert ("not-applicable", [1.0, 2.0]) in runner.batches  # one call, not one per job
    worker.stop()


def test_cancelled_jobs_are_skipped():
    gate = threading.Event()
    runner = Recorder(gate)
    worker = worker_with(runner)
    worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)
    cancelled = worker.submit(Task("a"), job(1), [None])
    kept = worker.submit(Task("a"), job(2), [None])
    assert cancelled.cancel()
    gate.set()
    assert kept.result(5).outputs == [20.0]
    worker.stop()
    assert all(1.0 not in values for _, values in runner.batches)


def test_stop_fails_waiting_jobs_and_refuses_new_ones():
    gate = threading.Event()
    runner = Recorder(gate)
    worker = worker_with(runner)
    running = worker.submit(Task("a"), job(0), [None])
    assert runner.started.wait(5)
    waiting = worker.submit(Task("b"), job(1), [None])
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    with pytest.raises(WorkerStoppedError):
        waiting.result(5)
    gate.set()
    stopper.join(5)
    assert running.result(5).outputs == [0.0]
    with pytest.raises(WorkerStoppedError):
        worker.submit(Task("a"), job(2), [None])


def test_two_threads_run_two_batches_at_once():
    both_running = threading.Barrier(2, timeout=5)

    def runner(task, inputs, targets):
        both_running.wait()  # passes only if the two batches are in flight together
        return inputs[:, 0].tolist()

    worker = worker_with(runner, max_batch=1, threads=2)
    futures = [worker.submit(Task("a"), job(i), [None]) for i in (1, 2)]
    assert sorted(f.result(10).outputs[0] for f in futures) == [1.0, 2.0]
    worker.stop()


def test_a_lone_batch_runs_on_every_core_and_overlapping_batches_share_them():
    from explain.machine import CoreShare

    gate = threading.Event()
    threads_seen: list[int] = []

    class Threads(Recorder):
        def __call__(self, task, inputs, targets):
            threads_seen.append(torch.get_num_threads())
            return super().__call__(task, inputs, targets)

    runner = Threads(gate)
    worker = worker_with(runner, max_batch=1, threads=2, cores=CoreShare(cores=2))
    first = worker.submit(Task("a"), job(0), [None])  # alone: both cores
    assert runner.started.wait(5)
    second = worker.submit(Task("a"), job(1), [None])  # beside the first: one core
    deadline = time.monotonic() + 5
    while len(threads_seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    first.result(5), second.result(5)
    alone = worker.submit(Task("a"), job(2), [None]).result(5)  # alone again
    worker.stop()
    assert threads_seen == [2, 1, 2] and alone.outputs == [20.0]

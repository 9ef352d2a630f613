"""Sharing the cores between batches: every core for a batch alone, an even share side by side."""

from __future__ import annotations

import threading

import pytest
import torch

from explain.machine import CoreShare

OPENMP = "OpenMP" in torch.__config__.parallel_info()


def test_a_batch_alone_gets_every_core_and_batches_side_by_side_share_them():
    share = CoreShare(cores=4)
    assert [share.threads_for(n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    assert CoreShare(cores=4, fixed=3).threads_for(2) == 3
    assert share.describe(2) == "torch threads per batch: 4 with 1 running, 2 with 2 running"
    with pytest.raises(ValueError, match="fixed"):
        CoreShare(cores=2, fixed=-1)


def test_each_batch_sets_its_own_threads_torch_threads():
    share = CoreShare(cores=2)
    first_in, second_done = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with share.batch() as threads:
            seen["first"] = threads
            seen["first torch"] = torch.get_num_threads()
            first_in.set()
            second_done.wait(10)
            seen["first torch after"] = torch.get_num_threads()

    def second() -> None:
        first_in.wait(10)
        with share.batch() as threads:
            seen["second"] = threads
            seen["second torch"] = torch.get_num_threads()
        second_done.set()

    runs = [threading.Thread(target=first), threading.Thread(target=second)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(20)
    assert seen["first"] == seen["first torch"] == 2
    assert seen["second"] == seen["second torch"] == 1
    if OPENMP:  # a per-thread setting: the second batch did not change the first's
        assert seen["first torch after"] == 2
    assert share.running == 0


def test_a_batch_that_fails_leaves_the_count_right():
    share = CoreShare(cores=2)
    with pytest.raises(RuntimeError), share.batch():
        raise RuntimeError("the model failed")
    assert share.running == 0
    with share.batch() as threads:
        assert threads == 2

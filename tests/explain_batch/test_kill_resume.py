"""A run killed with SIGKILL midway, then run again, ends with every input recorded exactly once."""

from __future__ import annotations

import collections
import signal
import subprocess
import time

from tests.explain_batch.conftest import batch_process, make_folder, read_lines, read_run


def test_sigkill_midway_then_rerun_records_each_input_once(tmp_path):
    folder = make_folder(tmp_path / "in", count=40)
    out = tmp_path / "out"
    # feature maps of an untrained ResNet-18, one image per batch: slow enough to kill midway
    args = [
        *folder.args,
        "--out",
        str(out),
        "--model",
        "resnet18:none",
        "--endpoint",
        "featuremaps",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    run = batch_process(*args, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    written = 0
    while written < 5:
        assert run.poll() is None, run.stderr.read().decode()
        assert time.monotonic() < deadline, "no results after 300 s"
        time.sleep(0.02)
        written = results.read_bytes().count(b"\n") if results.exists() else 0
    run.send_signal(signal.SIGKILL)
    run.wait()
    run.stderr.close()
    assert run.returncode == -signal.SIGKILL
    killed_at = read_lines(out)
    assert 5 <= len(killed_at) < len(folder.paths)
    assert read_run(out)["status"] == "running"  # the killed run never wrote its summary

    rerun = batch_process(*args)
    assert rerun.wait(300) == 1  # the corrupt JPEG and the text file
    lines = read_lines(out)
    counts = collections.Counter(line["path"] for line in lines)
    assert set(counts) == folder.paths and set(counts.values()) == {1}
    summary = read_run(out)
    assert summary["status"] == "complete"
    assert summary["counts"]["skipped"] == len(killed_at)
    assert summary["counts"]["ok"] + summary["counts"]["failed"] == len(folder.paths) - len(
        killed_at
    )
    print(
        f"killed after {len(killed_at)} of {len(folder.paths)} lines; the rerun skipped "
        f"{summary['counts']['skipped']} and scored {summary['counts']['ok'] + summary['counts']['failed']}"
    )
    for line in lines:
        if line["error"] is None:
            assert all((out / entry["png_file"]).is_file() for entry in line["featuremaps"])

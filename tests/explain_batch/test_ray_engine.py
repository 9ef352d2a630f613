"""The ``ray`` engine on a local Ray cluster: the same records as the ``local`` engine, the same
resuming, usage errors before any work, and no Ray process left behind."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import numpy as np

from explain_batch.engines import ray as ray_engine
from explain_batch.engines.ray import RayEngine
from tests.conftest import RAY_MARKER, assert_no_ray_process_left
from tests.explain_batch.conftest import batch, batch_process, make_folder, read_lines, read_run

CAM_TOLERANCE = 1e-4  # BATCH.md: cam values of local and ray agree within 1e-4


def _by_path(out):
    return {line["path"]: line for line in read_lines(out)}


def test_ray_and_local_write_the_same_records(ray_cluster, tmp_path):
    folder = make_folder(tmp_path / "in", count=17, seed=5)  # 22 inputs, two of them broken
    options = ["--endpoint", "gradcam", "--return-cam", "--top-k", "3", "--target", "281"]
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    assert batch(*folder.args, "--out", str(local), *options) == 1
    ray_args = ["--engine", "ray", "--ray-address", ray_cluster.address, "--batch-size", "3"]
    assert batch(*folder.args, "--out", str(ray_out), *options, *ray_args) == 1

    mine, theirs = _by_path(local), _by_path(ray_out)
    assert set(mine) == set(theirs) == folder.paths
    for path, a in mine.items():
        b = theirs[path]
        assert list(a) == list(b) and a["sha256"] == b["sha256"]
        if a["error"] is not None:
            assert a["error"] == b["error"] and a["error"]["code"] == folder.failures[path]
            continue
        assert [s["index"] for s in a["top_k"]] == [s["index"] for s in b["top_k"]]
        np.testing.assert_allclose(
            [s["score"] for s in a["top_k"]], [s["score"] for s in b["top_k"]], atol=1e-5
        )
        (x,), (y,) = a["explanations"], b["explanations"]
        assert (x["index"], x["layer"], x["cam"]["shape"]) == (y["index"], y["layer"], [7, 7])
        cams = np.array(x["cam"]["values"]), np.array(y["cam"]["values"])
        assert np.abs(cams[0] - cams[1]).max() <= CAM_TOLERANCE
        for name in ("overlay_file", "heatmap_file"):  # the same names, written by the driver
            assert x[name] == y[name] and (ray_out / y[name]).is_file()
    run = read_run(ray_out)
    assert run["engine"] == "ray" and run["model_name"] == "efficientnet_lite0"
    assert run["batch_size"] == 3 and run["counts"] == read_run(local)["counts"]


def test_ray_engine_resumes_like_local(ray_cluster, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "in", count=8, seed=2)
    outs = {engine: tmp_path / engine for engine in ("local", "ray")}
    engine_args = {"local": [], "ray": ["--engine", "ray", "--ray-address", ray_cluster.address]}
    datasets = collections.Counter()
    real_dataset = RayEngine._dataset

    def counted(self, ray, chunk):
        datasets[len(chunk)] += 1
        return real_dataset(self, ray, chunk)

    monkeypatch.setattr(RayEngine, "_dataset", counted)
    monkeypatch.setattr(ray_engine, "PATHS_PER_DATASET", 8)  # 13 paths: datasets of 8 and 5
    for engine, out in outs.items():
        assert batch(*folder.args, "--out", str(out), *engine_args[engine]) == 1
    assert datasets == {8: 1, len(folder.paths) - 8: 1}

    # A rerun skips everything and makes no dataset at all.
    before = (outs["ray"] / "results.jsonl").read_bytes()
    assert batch(*folder.args, "--out", str(outs["ray"]), *engine_args["ray"]) == 1
    assert datasets == {8: 1, len(folder.paths) - 8: 1}
    assert (outs["ray"] / "results.jsonl").read_bytes() == before
    assert read_run(outs["ray"])["counts"] == {
        "ok": 0,
        "failed": 0,
        "skipped": len(folder.paths),
        "previously_failed": 2,
    }

    # A run killed midway (whole lines only), and one of its recorded files changed since.
    lines = before.decode().splitlines(keepends=True)
    kept = lines[: len(lines) // 2]
    changed = next(line.split('"')[3] for line in kept if '"error":null' in line and ".png" in line)
    with open(changed, "ab") as file:
        file.write(b"\0")  # still a valid PNG, another SHA-256
    counts = {}
    datasets.clear()
    for engine, out in outs.items():
        (out / "results.jsonl").write_text("".join(kept), encoding="utf-8")
        assert batch(*folder.args, "--out", str(out), *engine_args[engine]) == 1
        recorded = collections.Counter(line["path"] for line in read_lines(out))
        assert set(recorded) == folder.paths and set(recorded.values()) == {1}
        counts[engine] = read_run(out)["counts"]
    assert counts["ray"] == counts["local"]
    assert counts["ray"]["skipped"] == len(kept) - 1  # the changed file is scored again
    assert sum(size * made for size, made in datasets.items()) == len(folder.paths) - len(kept) + 1
    again = {engine: _by_path(out)[changed] for engine, out in outs.items()}
    assert (
        again["ray"]["sha256"]
        == again["local"]["sha256"]
        != (next(line for line in kept if changed in line).split('"sha256":"')[1][:64])
    )


def test_options_the_cluster_refuses_exit_2_before_any_work(ray_cluster, tmp_path):
    """Another driver on the same cluster (``--ray-address``): the model is tried on the
    cluster before the run starts."""
    folder = make_folder(tmp_path / "in", count=2)
    out = tmp_path / "out"
    run = batch_process(
        *folder.args,
        "--out",
        str(out),
        "--no-progress",
        "--engine",
        "ray",
        "--ray-address",
        ray_cluster.address,
        "--model",
        "resnet18:NOPE",
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = run.communicate(timeout=300)
    assert run.returncode == 2, err
    assert "invalid_weights" in err and not out.exists()


def test_too_many_actors_for_the_cluster_exit_2(ray_cluster, tmp_path, capsys):
    folder = make_folder(tmp_path / "in", count=1)
    out = tmp_path / "out"
    ray_args = ["--engine", "ray", "--ray-address", ray_cluster.address, "--actors", "3"]
    assert batch(*folder.args, "--out", str(out), *ray_args) == 2
    assert "3 actors of 1 CPU(s) need 3 CPUs; the Ray cluster has 2" in capsys.readouterr().err
    assert not out.exists()


def test_without_an_address_the_command_runs_its_own_cluster_and_stops_it(tmp_path):
    folder = make_folder(tmp_path / "in", count=3)
    out = tmp_path / "out"
    marker = uuid.uuid4().hex
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must be short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {RAY_MARKER: marker, "RAY_TMPDIR": ray_temp}
    try:
        run = batch_process(
            *folder.args, "--out", str(out), "--no-progress", "--engine", "ray", env=env
        )
        assert run.wait(300) == 1  # the two broken inputs
        assert {line["path"] for line in read_lines(out)} == folder.paths
        assert read_run(out)["status"] == "complete"
        assert_no_ray_process_left(marker)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    folder = make_folder(tmp_path / "in", count=1)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were missing
    assert batch(*folder.args, "--out", str(tmp_path / "out"), "--engine", "ray") == 2
    assert "pip install 'explain-service[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""``explain-batch`` with the local engine: every input once, API error codes, resuming."""

from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from explain.tasks import TaskRunner
from explain_batch.scorer import Scorer
from tests.explain_batch.conftest import batch, make_folder, read_lines, read_run

RESULT_FIELDS = [
    "path",
    "sha256",
    "model",
    "top_k",
    "featuremaps",
    "explanations",
    "warnings",
    "error",
]


def test_every_input_gets_one_line_and_failures_carry_api_codes(folder, tmp_path):
    out = tmp_path / "out"
    assert batch(*folder.args, "--out", str(out)) == 1  # two inputs cannot be read

    lines = read_lines(out)
    counts = collections.Counter(line["path"] for line in lines)
    assert set(counts) == folder.paths and set(counts.values()) == {1}
    assert not any(".hidden" in path or path.endswith(".txt") for path in counts)
    for line in lines:
        if line["path"] in folder.failures:
            assert list(line) == ["path", "sha256", "model", "error"]
            assert line["error"]["code"] == folder.failures[line["path"]]
            assert line["path"] in line["error"]["message"]
        else:
            assert list(line) == RESULT_FIELDS and line["error"] is None
            assert line["model"] == "efficientnet_lite0" and len(line["top_k"]) == 5
            assert line["featuremaps"] is None and line["explanations"] is None
    run = read_run(out)
    total = len(folder.paths)
    assert run["status"] == "complete" and run["inputs"] == total
    assert run["counts"] == {"ok": total - 2, "failed": 2, "skipped": 0, "previously_failed": 0}
    assert run["images_per_second"] > 0 and run["versions"]["torch"]
    assert run["options"] == {} and run["endpoint"] == "predict"


def test_a_rerun_skips_everything_and_computes_nothing(folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [*folder.args, "--out", str(out), "--endpoint", "gradcam", "--top-k", "2"]
    assert batch(*args) == 1
    before = (out / "results.jsonl").read_bytes()
    pictures = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}

    calls = collections.Counter()

    def counting(name, original):
        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return counted

    monkeypatch.setattr(TaskRunner, "__call__", counting("model", TaskRunner.__call__))
    monkeypatch.setattr(Scorer, "prepare", counting("decode", Scorer.prepare))
    monkeypatch.setattr(Scorer, "forward", counting("batch", Scorer.forward))
    assert batch(*args) == 1  # the two failures are still failures
    assert calls == {"model": 1}  # the blank image that checks the options at start-up, only
    assert (out / "results.jsonl").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == pictures
    run = read_run(out)
    assert run["counts"] == {
        "ok": 0,
        "failed": 0,
        "skipped": len(folder.paths),
        "previously_failed": 2,
    }


def test_changed_options_need_overwrite_or_another_folder(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert batch(*folder.args, "--out", str(out), "--top-k", "3") == 1
    before = (out / "results.jsonl").read_bytes()
    assert batch(*folder.args, "--out", str(out), "--top-k", "4") == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "options: {'top_k': 3} -> {'top_k': 4}" in err
    assert (out / "results.jsonl").read_bytes() == before
    assert batch(*folder.args, "--out", str(out), "--top-k", "4", "--overwrite") == 1
    lines = read_lines(out)
    assert len(lines) == len(folder.paths)
    assert all(len(line["top_k"]) == 4 for line in lines if line["error"] is None)


def test_a_torn_last_line_is_cut_and_the_run_completed(folder, tmp_path):
    out = tmp_path / "out"
    assert batch(*folder.args, "--out", str(out)) == 1
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    kept = lines[:10]
    (out / "results.jsonl").write_text("".join(kept) + lines[10][: len(lines[10]) // 2])
    assert batch(*folder.args, "--out", str(out)) == 1
    paths = [line["path"] for line in read_lines(out)]
    assert sorted(paths) == sorted(folder.paths)
    assert read_run(out)["counts"]["skipped"] == 10


def test_a_changed_file_is_scored_again_and_recorded_once(folder, tmp_path):
    out = tmp_path / "out"
    assert batch(*folder.args, "--out", str(out), "--no-images") == 1
    changed = sorted(p for p in folder.paths if p.endswith(".png") and p not in folder.failures)[0]
    Image.new("RGB", (50, 50), (200, 30, 30)).save(changed)
    assert batch(*folder.args, "--out", str(out), "--no-images") == 1
    lines = read_lines(out)
    assert sorted(line["path"] for line in lines) == sorted(folder.paths)
    (line,) = [line for line in lines if line["path"] == changed]
    assert line["sha256"] == hashlib.sha256(Path(changed).read_bytes()).hexdigest()
    assert read_run(out)["counts"]["ok"] == 1


def test_png_files_are_per_input_and_stable(tmp_path):
    folder = make_folder(tmp_path / "in", count=2)
    twin = tmp_path / "in" / "twin"
    twin.mkdir()
    source = sorted(p for p in folder.paths if p.endswith(".png") and p not in folder.failures)[0]
    (twin / os.path.basename(source)).write_bytes(Path(source).read_bytes())  # same name and bytes
    out = tmp_path / "out"
    args = [
        source,
        str(twin),
        "--out",
        str(out),
        "--endpoint",
        "gradcam",
        "--target",
        "1",
        "--target",
        "tabby",
    ]
    assert batch(*args) == 0
    first = {line["path"]: line for line in read_lines(out)}
    files = [
        e[name]
        for line in first.values()
        for e in line["explanations"]
        for name in ("overlay_file", "heatmap_file")
    ]
    assert len(files) == len(set(files)) == 8
    for name in files:
        with Image.open(out / name) as image:
            assert image.size == (224, 224) and image.mode in ("RGB", "P")
    assert batch(*args, "--overwrite") == 0
    again = {line["path"]: line for line in read_lines(out)}
    assert [e["overlay_file"] for line in again.values() for e in line["explanations"]] == [
        e["overlay_file"] for line in first.values() for e in line["explanations"]
    ]


def test_featuremaps_files_and_no_images(tmp_path):
    folder = make_folder(tmp_path / "in", count=3)
    out = tmp_path / "out"
    assert (
        batch(
            folder.args[0],
            "--out",
            str(out),
            "--endpoint",
            "featuremaps",
            "--layers",
            "_blocks.2,_head_act",
            "--max-channels",
            "8",
        )
        == 1
    )
    for line in read_lines(out):
        if line["error"] is None:
            assert [m["layer"] for m in line["featuremaps"]] == ["_blocks.2", "_head_act"]
            for entry in line["featuremaps"]:
                with Image.open(out / entry["png_file"]) as image:
                    assert image.mode == "L"
    bare = tmp_path / "bare"
    assert (
        batch(
            folder.args[0],
            "--out",
            str(bare),
            "--endpoint",
            "gradcam",
            "--return-cam",
            "--no-images",
        )
        == 1
    )
    assert not (bare / "images").exists()
    for line in read_lines(bare):
        if line["error"] is None:
            (explanation,) = line["explanations"]
            assert "overlay_file" not in explanation and "overlay_png" not in explanation
            assert explanation["cam"]["shape"] == [7, 7]


def test_fail_fast_stops_at_the_first_failure(folder, tmp_path):
    out = tmp_path / "out"
    corrupt = next(iter(folder.failures))
    assert batch(corrupt, *folder.args, "--out", str(out), "--fail-fast", "--batch-size", "1") == 1
    lines = read_lines(out)
    assert lines[0]["path"] == corrupt and len(lines) < len(folder.paths)
    assert read_run(out)["status"] == "stopped"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "vgg99"], "unknown_model"),
        (["--model", "resnet18:NOPE"], "invalid_weights"),
        (["--layers", "_head_act"], "--layers is an option of featuremaps"),
        (["--endpoint", "gradcam", "--layer", "nope"], "unknown_layer"),
        (["--endpoint", "gradcam", "--target", "no such class"], "unknown_label"),
        (
            ["--endpoint", "gradcam", "--method", "cam", "--model", "alexnet:none"],
            "method_not_applicable",
        ),
        (["--top-k", "1001"], "invalid_option"),
        (["--url", "http://127.0.0.1:9"], "--url is an option of --engine http"),
    ],
)
def test_usage_errors_exit_2_before_any_work(folder, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert batch(*folder.args, "--out", str(out), *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_or_empty_inputs_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert batch(str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 2
    assert "no images" in capsys.readouterr().err
    assert batch(str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")) == 2
    assert batch(f"@{tmp_path / 'missing.txt'}", "--out", str(tmp_path / "o")) == 2
    with pytest.raises(SystemExit) as caught:
        batch("--out", str(tmp_path / "o"))
    assert caught.value.code == 2
    assert not (tmp_path / "o").exists()


def test_a_missing_file_in_a_manifest_is_a_failed_input(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), "white").save(good)
    (tmp_path / "list.txt").write_text("good.png\ngone.png\n")
    out = tmp_path / "out"
    assert batch(f"@{tmp_path / 'list.txt'}", "--out", str(out)) == 1
    errors = {os.path.basename(line["path"]): line["error"] for line in read_lines(out)}
    assert errors["good.png"] is None and errors["gone.png"]["code"] == "not_found"
    json.dumps(errors)


def test_no_optimize_reaches_the_engine_config(tmp_path):
    from explain_batch.cli import request_from

    assert request_from(["x.jpg", "--out", str(tmp_path)]).config.optimize is True
    request = request_from(["x.jpg", "--out", str(tmp_path), "--no-optimize"])
    assert request.config.optimize is False
    scorer = Scorer(request.config)
    try:
        assert scorer.runner.graphs is None
    finally:
        scorer.close()

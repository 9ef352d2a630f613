"""The ``local`` and ``http`` engines give the same answers; the ``http`` engine's own behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.explain_batch.conftest import batch, make_folder, read_lines, read_run
from tests.realserver import free_port

CAM_TOLERANCE = 0.03  # BATCH.md: cam values of local and http agree within 0.03


def _by_path(out):
    return {line["path"]: line for line in read_lines(out)}


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("agree"), count=6, seed=3)


@pytest.mark.parametrize(
    "options",
    [
        ["--endpoint", "predict", "--top-k", "5"],
        ["--endpoint", "featuremaps", "--layers", "_blocks.2,_head_act", "--max-channels", "16"],
        ["--endpoint", "gradcam", "--return-cam", "--target", "281", "--target", "coffee mug"],
    ],
    ids=["predict", "featuremaps", "gradcam"],
)
def test_local_and_http_agree(service_url, inputs, tmp_path, options):
    local, http = tmp_path / "local", tmp_path / "http"
    assert batch(*inputs.args, "--out", str(local), *options) == 1
    assert (
        batch(*inputs.args, "--out", str(http), *options, "--engine", "http", "--url", service_url)
        == 1
    )
    local_lines, http_lines = _by_path(local), _by_path(http)
    assert set(local_lines) == set(http_lines) == inputs.paths
    for path, a in local_lines.items():
        b = http_lines[path]
        if a["error"] is not None:
            assert b["error"]["code"] == a["error"]["code"] == inputs.failures[path]
            continue
        assert b["error"] is None and a["model"] == b["model"] == "efficientnet_lite0"
        assert [s["index"] for s in a["top_k"]] == [s["index"] for s in b["top_k"]]
        np.testing.assert_allclose(
            [s["score"] for s in a["top_k"]], [s["score"] for s in b["top_k"]], atol=1e-3
        )
        for mine, theirs in zip(a["featuremaps"] or [], b["featuremaps"] or [], strict=True):
            assert (mine["layer"], mine["shape"]) == (theirs["layer"], theirs["shape"])
            difference = np.abs(
                _pixels(local / mine["png_file"]) - _pixels(http / theirs["png_file"])
            )
            assert difference.mean() < 1.0 and difference.max() <= 8
        for mine, theirs in zip(a["explanations"] or [], b["explanations"] or [], strict=True):
            assert (
                mine["index"] == theirs["index"] and mine["cam"]["shape"] == theirs["cam"]["shape"]
            )
            cams = np.array(mine["cam"]["values"]), np.array(theirs["cam"]["values"])
            assert np.abs(cams[0] - cams[1]).max() <= CAM_TOLERANCE
            for name in ("overlay_file", "heatmap_file"):
                assert (
                    _pixels(local / mine[name]).shape
                    == _pixels(http / theirs[name]).shape
                    == (224, 224, 3)
                )
    assert read_run(http)["engine"] == "http"


def test_http_engine_resumes_and_reports_an_unreachable_url(service_url, tmp_path, capsys):
    folder = make_folder(tmp_path / "in", count=4)
    out = tmp_path / "out"
    args = [
        *folder.args,
        "--out",
        str(out),
        "--engine",
        "http",
        "--url",
        service_url,
        "--concurrency",
        "2",
    ]
    assert batch(*args, "--api-key", "s3cret") == 1  # the service takes any key when it has none
    assert batch(*args, "--api-key=s3cret") == 1
    run = read_run(out)
    assert run["counts"]["skipped"] == len(folder.paths)
    assert "s3cret" not in json.dumps(run) and run["command"][-1] == "--api-key=***"
    capsys.readouterr()
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert (
        batch(*folder.args, "--out", str(tmp_path / "x"), "--engine", "http", "--url", nowhere) == 2
    )
    assert "cannot reach the service" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--model", "resnet50"], "unknown_model"),
        (["--endpoint", "gradcam", "--layer", "nope"], "unknown_layer"),
    ],
)
def test_http_engine_refused_options_exit_2_before_any_work(
    service_url, tmp_path, capsys, extra, code
):
    folder = make_folder(tmp_path / "in", count=2)
    out = tmp_path / "out"
    assert (
        batch(*folder.args, "--out", str(out), "--engine", "http", "--url", service_url, *extra)
        == 2
    )
    assert code in capsys.readouterr().err
    assert not out.exists()


def test_faithfulness_scores_reach_the_records(service_url, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    from tests.conftest import photo

    photo("chelsea").save(photos / "chelsea.jpg")
    options = ["--endpoint", "gradcam", "--faithfulness", "--no-images"]
    local, http = tmp_path / "local", tmp_path / "http"
    assert batch(str(photos), "--out", str(local), *options) == 0
    assert (
        batch(str(photos), "--out", str(http), *options, "--engine", "http", "--url", service_url)
        == 0
    )
    (mine,) = read_lines(local)[0]["explanations"]
    (theirs,) = read_lines(http)[0]["explanations"]
    assert set(mine["faithfulness"]) == {"confidence_change", "deletion_auc", "insertion_auc"}
    for name, value in mine["faithfulness"].items():
        assert value == pytest.approx(theirs["faithfulness"][name], abs=0.03), name
    assert "overlay_file" not in mine and read_run(local)["options"]["faithfulness"] is True

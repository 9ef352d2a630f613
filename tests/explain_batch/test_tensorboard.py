"""``--tensorboard DIR``: the event file holds each image's overlays, feature-map grids and top
classes; progress on a terminal and in logs."""

from __future__ import annotations

import builtins
import io

import pytest

from explain_batch.progress import Progress
from tests.explain_batch.conftest import batch, make_folder, read_lines


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events


def test_overlays_and_feature_maps_are_tensorboard_images(tmp_path):
    folder = make_folder(tmp_path / "in", count=2)
    ok = sorted(p for p in folder.paths if p not in folder.failures)
    board = tmp_path / "board"
    assert (
        batch(
            *ok,
            "--out",
            str(tmp_path / "cam"),
            "--endpoint",
            "gradcam",
            "--target",
            "281",
            "--target",
            "285",
            "--tensorboard",
            str(board),
        )
        == 0
    )
    assert (
        batch(
            *ok,
            "--out",
            str(tmp_path / "maps"),
            "--endpoint",
            "featuremaps",
            "--layers",
            "_blocks.2,_head_act",
            "--max-channels",
            "16",
            "--no-images",
            "--tensorboard",
            str(board),
        )
        == 0
    )
    events = _events(board)
    images = set(events.Tags()["images"])
    expected = {f"{path}/gradcam/_head_act/{index}" for path in ok for index in (281, 285)}
    expected |= {
        f"{path}/featuremaps/{layer}" for path in ok for layer in ("_blocks.2", "_head_act")
    }
    assert images == expected
    for path in ok:
        (overlay,) = events.Images(f"{path}/gradcam/_head_act/281")
        assert (overlay.width, overlay.height) == (224, 224)
        (grid,) = events.Images(f"{path}/featuremaps/_head_act")  # 16 tiles of 7x7, padding 2
        assert (grid.width, grid.height) == (4 * 9 + 2, 4 * 9 + 2)
        assert f"{path}/top_k/text_summary" in events.Tags()["tensors"]
    # --no-images wrote no files, but TensorBoard got the grids
    assert not (tmp_path / "maps" / "images").exists()
    assert all(
        "png_file" not in m for line in read_lines(tmp_path / "maps") for m in line["featuremaps"]
    )


def test_a_missing_tensorboard_package_is_a_clear_usage_error(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    folder = make_folder(tmp_path / "in", count=1)
    assert (
        batch(*folder.args, "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb"))
        == 2
    )
    assert "pip install 'explain-service[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bar", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_lines_in_logs(bar):
    stream = io.StringIO()
    progress = Progress(3, bar=bar, every=0.0, stream=stream)
    for status in ("ok", "failed", "skipped"):
        progress.update(status)
    progress.close()
    text = stream.getvalue()
    if bar:
        assert "3/3" in text and "img/s" in text and "\r" in text
    else:
        lines = text.splitlines()
        assert (
            lines[-1].startswith("explain-batch: 3/3 (100%)") and "1 failed, 1 skipped" in lines[-1]
        )
        assert len(lines) == 4

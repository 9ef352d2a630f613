"""Generated input folders and helpers to run ``explain-batch`` and read what it wrote."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain_batch.cli import main
from tests.conftest import ROOT


@dataclass(frozen=True)
class Folder:
    """A generated input set.

    Attributes:
        args: The INPUT arguments that name it (the folder and a manifest).
        paths: Every input path as the run records it.
        failures: Path to the error code it must get.
    """

    args: list[str]
    paths: set[str]
    failures: dict[str, str]


def _image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth random picture (gradients and a blob), so classes and maps vary between images."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    colour = rng.uniform(0, 255, 3)
    centre = rng.uniform(0.2, 0.8, 2)
    blob = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) * rng.uniform(5, 30))
    pixels = colour * (0.5 + 0.5 * np.stack([x, y, blob], axis=-1)) + rng.normal(
        0, 12, (height, width, 3)
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_folder(root: Path, count: int = 30, seed: int = 0) -> Folder:
    """``count`` images in nested folders (PNG, JPEG, WebP, upper-case extensions), a corrupt
    JPEG, a text file named ``.png``, a hidden file and a non-image file (both skipped), and a
    manifest naming three more images elsewhere (plus a comment and a blank line)."""
    rng = np.random.default_rng(seed)
    photos = root / "photos"
    paths: set[str] = set()
    kinds = [("png", "PNG"), ("jpg", "JPEG"), ("JPG", "JPEG"), ("webp", "WEBP"), ("PNG", "PNG")]
    for i in range(count):
        folder = photos / ("a" if i % 3 == 0 else "b/c" if i % 3 == 1 else "")
        folder.mkdir(parents=True, exist_ok=True)
        suffix, format = kinds[i % len(kinds)]
        path = folder / f"img{i:02d}.{suffix}"
        _image(rng, (int(rng.integers(40, 120)), int(rng.integers(40, 120)))).save(
            path, format=format
        )
        paths.add(os.path.normpath(path))
    good = io.BytesIO()
    _image(rng, (64, 64)).save(good, format="JPEG")
    (photos / "b").mkdir(parents=True, exist_ok=True)
    (photos / "b" / "corrupt.jpg").write_bytes(good.getvalue()[:300] + b"\x00" * 50)
    (photos / "notes.png").write_text("not an image at all\n")
    (photos / ".hidden.png").write_bytes(good.getvalue())
    (photos / "readme.txt").write_text("skipped")
    failures = {
        os.path.normpath(photos / "b" / "corrupt.jpg"): "invalid_image",
        os.path.normpath(photos / "notes.png"): "invalid_image",
    }
    paths |= set(failures)
    extra = root / "extra"
    extra.mkdir()
    names = []
    for i in range(3):
        _image(rng, (80, 60)).save(extra / f"more{i}.png")
        names.append(f"extra/more{i}.png")
        paths.add(os.path.normpath(root / "extra" / f"more{i}.png"))
    manifest = root / "list.txt"
    manifest.write_text("# three more\n" + "\n".join(names[:2]) + "\n\n" + names[2] + "\n")
    return Folder([str(photos), f"@{manifest}"], paths, failures)


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    return make_folder(tmp_path / "in")


def read_lines(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def read_run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def batch(*args: str) -> int:
    """``explain-batch`` in this process (so tests can count model calls); its exit status."""
    return main(["--no-progress", *args])


def batch_process(*args: str, **popen) -> subprocess.Popen:
    """``python -m explain_batch`` in a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "explain_batch", *args], cwd=ROOT, **popen)

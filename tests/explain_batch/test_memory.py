"""Memory stays flat: a run over 2,000 images holds a bounded amount of work, not all of it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.explain_batch.conftest import batch_process, read_run

MiB = 1024 * 1024
IMAGES = 2000


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def test_rss_of_a_run_over_2000_images_stays_flat(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = tmp_path / "many" / f"{i // 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"{i:04d}.png"
        )
    out = tmp_path / "out"
    run = batch_process(
        str(tmp_path / "many"),
        "--out",
        str(out),
        "--model",
        "mobilenet_v3_small:none",
        "--top-k",
        "3",
        "--no-progress",
    )
    samples: list[tuple[int, int]] = []  # (lines written, RSS)
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        rss = _rss(run.pid)
        results = out / "results.jsonl"
        lines = results.read_bytes().count(b"\n") if results.exists() else 0
        if rss is not None:
            samples.append((lines, rss))
        time.sleep(0.05)
    if run.poll() is None:
        run.kill()
    assert run.wait() == 0
    assert read_run(out)["counts"]["ok"] == IMAGES
    early = max(rss for lines, rss in samples if IMAGES // 5 <= lines <= IMAGES // 4)
    # while scoring: the interpreter's own teardown after the last line is not the run's
    late = max(rss for lines, rss in samples if IMAGES * 3 // 4 <= lines < IMAGES * 19 // 20)
    print(f"RSS at 20-25%: {early / MiB:.1f} MiB, at 75-95%: {late / MiB:.1f} MiB")
    # Holding every input's decoded tensor (600 KB each) would add hundreds of MiB over the
    # last 1,500 images; what the run keeps per input (an index entry) is a few dozen bytes.
    assert late - early < 25 * MiB

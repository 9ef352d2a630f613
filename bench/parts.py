"""Parts of a request on efficientnet_lite0, each against what it replaced, side by side:

- PNG encoding of the six default feature grids of ``chelsea`` and of its Grad-CAM overlay:
  ``explain.render.encode_png`` (NumPy and zlib, the Sub filter) against Pillow's encoder
  (adaptive filters), both zlib level 1 and the same deflate strategy: time and size;
- Score-CAM's masked forward passes through the whole-model ONNX Runtime graph in batches of 4, 8,
  16 and 32: time per image;
- ``torch.set_num_threads`` switching between 1 and 2 (what a batch pays to get its share of the
  cores), and a batch-1 forward right after such a switch against one without.

    python -m bench.parts --rounds 5

Each round runs every contender once, in turn; the figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import zlib
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from explain.featuremaps import capture_feature_maps
from explain.images import prepare_image
from explain.inference import ModelGraphs
from explain.models import load_model
from explain.render import encode_png, feature_grid
from tests.service.conftest import image_bytes


def pillow_png(pixels: np.ndarray, strategy: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1, compress_type=strategy)
    return buffer.getvalue()


def seconds(call: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model("efficientnet_lite0")
    inputs = prepare_image(image_bytes("chelsea"), loaded.preprocess).tensor[None]
    maps = capture_feature_maps(loaded.hooks, inputs, loaded.feature_layers).maps
    grids = [feature_grid(m[0]) for m in maps.values()]
    photo = np.asarray(Image.open(io.BytesIO(image_bytes("chelsea"))).convert("RGB"))
    graph = ModelGraphs(loaded.model, loaded.hooks, loaded.preprocess.input_size).full()
    assert graph is not None
    masks = torch.rand(64, 1, 224, 224)

    timings: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    contenders: dict[str, Callable[[], object]] = {
        "six feature grids, encode_png": lambda: [encode_png(g) for g in grids],
        "six feature grids, Pillow": lambda: [pillow_png(g, zlib.Z_RLE) for g in grids],
        "photo 451x300 RGB, encode_png": lambda: encode_png(photo),
        "photo 451x300 RGB, Pillow": lambda: pillow_png(photo, zlib.Z_RLE),
    }
    sizes["six feature grids, encode_png"] = sum(len(encode_png(g)) for g in grids)
    sizes["six feature grids, Pillow"] = sum(len(pillow_png(g, zlib.Z_RLE)) for g in grids)
    sizes["photo 451x300 RGB, encode_png"] = len(encode_png(photo))
    sizes["photo 451x300 RGB, Pillow"] = len(pillow_png(photo, zlib.Z_RLE))
    for batch in (4, 8, 16, 32):
        contenders[f"64 masked passes, graph, batches of {batch}"] = lambda batch=batch: [
            graph(inputs * chunk) for chunk in masks.split(batch)
        ]

    def switched() -> None:
        torch.set_num_threads(1)
        torch.set_num_threads(2)

    with torch.inference_mode():
        for contender in contenders.values():
            contender()
        for _ in range(args.rounds):
            for name, contender in contenders.items():
                repeat = 1 if "masked" in name else 20
                timings.setdefault(name, []).append(seconds(contender, repeat))
            timings.setdefault("torch.set_num_threads(1), (2)", []).append(seconds(switched, 10000))
            for name, before in (
                ("forward, threads left at 2", None),
                ("forward after 2->1->2", switched),
            ):
                times = []
                for _ in range(30):
                    if before:
                        before()
                    started = time.perf_counter()
                    loaded.model(inputs)
                    times.append(time.perf_counter() - started)
                timings.setdefault(f"batch-1 eager {name}", []).append(statistics.median(times))

    print("| contender | median | per round | bytes |")
    print("| --- | ---: | --- | ---: |")
    for name, values in timings.items():
        scale, unit = (1000 / 64, "ms per image") if "masked" in name else (1000, "ms")
        if "set_num_threads" in name:
            scale, unit = 1e6, "us"
        rounds = " ".join(f"{v * scale:.3f}" for v in values)
        print(
            f"| {name} | {statistics.median(values) * scale:.3f} {unit} | {rounds} | "
            f"{sizes.get(name, '')} |"
        )


if __name__ == "__main__":
    main()

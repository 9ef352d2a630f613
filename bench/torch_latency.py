"""Batch-1 latency of the default model and resnet50 under whichever torch is installed.

Compares torch builds (PyPI's against Debian's) by running in each image in turn::

    docker run --rm -v "$PWD/bench/torch_latency.py:/b.py:ro" --entrypoint python IMAGE /b.py

A plain script (the images do not hold ``bench/``); the median of 30 calls after 5 warm-up calls,
on 2 torch threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from explain.methods import get_method
from explain.models import load_model


def median_ms(call: Callable[[], object], rounds: int = 30) -> float:
    """The median wall time of ``call`` in milliseconds, after 5 warm-up calls."""
    for _ in range(5):
        call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return sorted(times)[rounds // 2] * 1000


def main() -> None:
    torch.set_num_threads(2)
    image = torch.rand(1, 3, 224, 224)
    lite = load_model("efficientnet_lite0")
    gradcam = get_method("gradcam")(lite.hooks, lite.target_layer)
    resnet = load_model("resnet50:none")
    with torch.no_grad():
        lite_ms = median_ms(lambda: lite.model(image))
        resnet_ms = median_ms(lambda: resnet.model(image), rounds=15)
    gradcam_ms = median_ms(lambda: gradcam(image, targets=[[281]]))
    print(
        f"torch {torch.__version__}: efficientnet_lite0 forward {lite_ms:.1f} ms, "
        f"gradcam {gradcam_ms:.1f} ms, resnet50 forward {resnet_ms:.1f} ms "
        "(median, batch 1, 2 threads)"
    )


if __name__ == "__main__":
    main()

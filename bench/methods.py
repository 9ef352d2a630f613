"""In-process cost of explanations, as ratios to a plain forward pass measured in the same run.

For each model and batch size, every contender is timed in interleaved rounds (one call of each per
round), so load on a shared machine hits them all alike; the table shows medians and the ratio of
each median to the plain forward's.

    python -m bench.methods                          # resnet50 + efficientnet_lite0, batch 1 and 8
    python -m bench.methods --models resnet50 --batches 1 --rounds 5 --no-scorecam
    python -m bench.methods --only "ours: gradcam" --rounds 60 --json bench/out/gradcam_cost.json
    python -m bench.methods --models resnet50 efficientnet_lite0 vit_b_16 --no-scorecam \
        --only guided "gradcam +" "ours: gradcam" --rounds 15 --json bench/out/new_methods.json

Contenders: a plain forward under ``torch.inference_mode()`` (with our inert hooks attached, and on
an unhooked copy), our ``gradcam``, ``gradcam++``, ``layercam``, ``scorecam``, ``eigencam``,
``guided_backprop``, ``guided_gradcam`` (models whose activations are ReLU or ReLU6), Grad-CAM with
``faithfulness=True`` (the model task the service runs) and feature maps, and the reference
libraries' Grad-CAM: pytorch-grad-cam (``grad-cam``), captum's ``LayerGradCam`` and torchcam's
``GradCAM``, each used the way its documentation shows. On a ViT the layer is its default (the last
block's ``ln_1``), pytorch-grad-cam gets the reshape its documentation asks for, and captum's and
torchcam's Grad-CAM, which have no reshape, are left out. Score-CAM and the faithfulness scores run
a few rounds only (``--slow-rounds``): they cost tens to thousands of forward passes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from explain.errors import MethodNotApplicableError
from explain.featuremaps import capture_feature_maps
from explain.methods import get_method
from explain.models import get_entry, load_model
from explain.tasks import CAMTask, TaskRunner

SPECS = {
    "resnet50": "resnet50:none",
    "efficientnet_lite0": "efficientnet_lite0",
    "vit_b_16": "vit_b_16:none",
}
SLOW = ("ours: scorecam", "ours: gradcam + faithfulness")


def reference_model(loaded) -> torch.nn.Module:
    """An unhooked copy with trainable parameters, as the reference libraries expect."""
    model = get_entry(loaded.name).build()
    model.load_state_dict(loaded.model.state_dict())
    return model.eval()


def contenders(
    loaded, x: torch.Tensor, targets: list[int], scorecam: bool
) -> dict[str, Callable[[], object]]:
    layer_name = loaded.target_layer
    plain = reference_model(loaded)
    layer = plain.get_submodule(layer_name)

    def forward(model):
        def run():
            with torch.inference_mode():
                return model(x)

        return run

    ours = {
        name: get_method(name)(loaded.hooks, layer_name)
        for name in ("gradcam", "gradcam++", "layercam", "scorecam", "eigencam")
    }
    runs: dict[str, Callable[[], object]] = {
        "forward (inert hooks)": forward(loaded.model),
        "forward (no hooks)": forward(plain),
        "ours: gradcam": lambda: ours["gradcam"](x, targets),
        "ours: gradcam++": lambda: ours["gradcam++"](x, targets),
        "ours: layercam": lambda: ours["layercam"](x, targets),
        "ours: eigencam": lambda: ours["eigencam"](x, targets),
        "ours: featuremaps": lambda: capture_feature_maps(loaded.hooks, x, loaded.feature_layers),
    }
    try:
        guided = get_method("guided_backprop")(loaded.hooks)
        guided_gradcam = get_method("guided_gradcam")(loaded.hooks, layer_name)
        runs["ours: guided_backprop"] = lambda: guided(x, targets)
        runs["ours: guided_gradcam"] = lambda: guided_gradcam(x, targets)
    except MethodNotApplicableError:  # GELU in a ViT: no guided rule
        pass
    runner = TaskRunner(loaded)
    task = CAMTask("gradcam", layer_name, faithfulness=True)
    runs["ours: gradcam + faithfulness"] = lambda: runner(task, x, [[t] for t in targets])
    if scorecam and len(x) == 1:  # one forward per channel and image: minutes at batch 8
        runs["ours: scorecam"] = lambda: ours["scorecam"](x, targets)

    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # Each library gets its own copy: pytorch-grad-cam and torchcam keep hooks on the model.
    pgc_model = reference_model(loaded)
    view = loaded.layers.check(layer_name, spatial=True).view
    pgc = PGCGradCAM(
        model=pgc_model,
        target_layers=[pgc_model.get_submodule(layer_name)],
        reshape_transform=view if view is not None and view.layout != "chw" else None,
    )
    pgc_targets = [ClassifierOutputTarget(t) for t in targets]
    runs["grad-cam: GradCAM"] = lambda: pgc(input_tensor=x, targets=pgc_targets)
    if view is not None and view.layout != "chw":  # captum and torchcam need (N, C, H, W) maps
        return runs

    from captum.attr import LayerGradCam

    captum = LayerGradCam(plain, layer)
    runs["captum: LayerGradCam"] = lambda: captum.attribute(
        x, target=targets, relu_attributions=True
    )

    from torchcam.methods import GradCAM as TorchCAMGradCAM

    torchcam_model = reference_model(loaded)
    extractor = TorchCAMGradCAM(
        torchcam_model, target_layer=layer_name, input_shape=tuple(x.shape[1:])
    )

    def torchcam() -> object:
        scores = torchcam_model(x)
        return extractor(class_idx=targets, scores=scores)

    runs["torchcam: GradCAM"] = torchcam
    return runs


def measure(
    runs: dict[str, Callable[[], object]], rounds: int, slow: set[str], slow_rounds: int = 1
) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():  # warm-up
        if name not in slow:
            run()
    names = list(runs)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate: no fixed order
            run = runs[name]
            if name in slow and i >= slow_rounds:
                continue
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--slow-rounds", type=int, default=3, help="rounds of Score-CAM and faithfulness"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--no-scorecam",
        dest="scorecam",
        action="store_false",
        help="skip Score-CAM (one forward per channel)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="contenders whose name contains one of these (forwards always run)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/out/methods.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}"
    )

    report = []
    for name in args.models:
        loaded = load_model(SPECS[name])
        for batch in args.batches:
            torch.manual_seed(0)
            x = torch.randn(batch, 3, *loaded.preprocess.input_size)
            targets = [int(t) for t in torch.randint(0, loaded.num_classes, (batch,))]
            runs = contenders(loaded, x, targets, args.scorecam)
            if args.only:
                runs = {
                    n: r
                    for n, r in runs.items()
                    if n.startswith("forward") or any(o in n for o in args.only)
                }
            medians = measure(runs, args.rounds, slow=set(SLOW), slow_rounds=args.slow_rounds)
            base = medians["forward (inert hooks)"]
            print(f"\n{name}, batch {batch} ({args.rounds} rounds, medians)")
            print(f"| {'contender':24} | {'ms':>9} | {'x forward':>9} |")
            print(f"| {'-' * 24} | {'-' * 9}: | {'-' * 9}: |")
            for contender, seconds in medians.items():
                print(f"| {contender:24} | {seconds * 1000:9.1f} | {seconds / base:9.2f} |")
                report.append(
                    {
                        "model": name,
                        "batch": batch,
                        "contender": contender,
                        "ms": seconds * 1000,
                        "ratio": seconds / base,
                    }
                )
        loaded.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()

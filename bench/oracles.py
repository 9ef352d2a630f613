"""How far our maps and scores are from the reference implementations, per method and model.

Uses the same oracles and cases as the tests (which assert <= 1e-4) and prints the measured maximum
absolute difference of the maps normalised by their maximum:

- the CAM family against pytorch-grad-cam and captum on resnet18 and the small CNN
  (tests/explain/test_methods.py);
- the CAM family against pytorch-grad-cam with a hand-written reshape on vit_b_16, swin_t and
  maxvit_t (tests/explain/test_transformers.py), plus XGrad-CAM on the ViT with PyTorch's fused
  attention fast path left on (see that module's docstring);
- Guided Backpropagation and Guided Grad-CAM against captum (tests/explain/test_guided.py);
- ``confidence_change`` against pytorch-grad-cam's ``CamMultImageConfidenceChange`` (absolute
  difference, probability units; tests/explain/test_faithfulness.py).

    python -m bench.oracles 2>/dev/null   # (the reference Score-CAM draws progress bars on stderr)
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
)

from explain.faithfulness import score_maps
from explain.hooks import ModelHooks
from explain.methods import get_method, normalize_maps, upsample_maps
from tests.conftest import SmallCNN
from tests.explain import test_transformers as transformers
from tests.explain.test_guided import captum_attribution
from tests.explain.test_methods import CASES, ORACLES, make_method, oracle_maps


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((normalize_maps(ours.relu()) - normalize_maps(theirs.relu())).abs().max())


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():  # as the test fixture
        model.features[4].running_mean.uniform_(-0.5, 0.5)
        model.features[4].running_var.uniform_(0.5, 2.0)
    return model


def cnn_cases():
    for name, (factory, layer, oracle_layer, shape, targets) in CASES.items():
        torch.manual_seed(0)
        model = factory().eval() if factory else small_cnn()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        yield name, model, layer, oracle_layer(model), x, targets


def print_table(
    title: str, columns: list[str], rows: dict[tuple[str, str], list[str] | dict[str, str]]
) -> None:
    """Rows of cells in column order, or by column name (missing ones left blank)."""
    print(f"\n{title}\n")
    print("| method | oracle | " + " | ".join(columns) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in columns) + " |")
    for (method, oracle), cells in rows.items():
        if isinstance(cells, dict):
            cells = [cells.get(column, "") for column in columns]
        print(f"| {method} | {oracle} | " + " | ".join(cells) + " |")


def cnn_table() -> None:
    rows: dict[tuple[str, str], list[str]] = {}
    for _, model, layer, oracle_layer, x, targets in cnn_cases():
        first = [t[0] for t in targets]
        with ModelHooks(model) as hooks:
            for method in ORACLES:
                ours = torch.cat(get_method(method)(hooks, layer)(x, first).maps)
                theirs = oracle_maps(method, model, oracle_layer, x, first)
                if method == "eigencam":
                    theirs = theirs * torch.sign((ours * theirs).sum(dim=(1, 2)))[:, None, None]
                rows.setdefault((method, "grad-cam"), []).append(f"{difference(ours, theirs):.1e}")
            ours = torch.cat(get_method("gradcam")(hooks, layer)(x, first).maps)
        theirs = LayerGradCam(model, oracle_layer).attribute(
            x, target=first, relu_attributions=True
        )
        rows.setdefault(("gradcam", "captum"), []).append(
            f"{difference(ours, theirs.detach()[:, 0]):.1e}"
        )
    print_table("CNNs", list(CASES), rows)


def transformer_table() -> None:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    fast_path = torch.backends.mha.get_fastpath_enabled()
    for name, (layer, reshape, targets) in sorted(transformers.CASES.items()):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        if name == "vit_b_16":
            torch.nn.init.normal_(model.heads.head.weight, std=0.02)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        module = model.get_submodule(layer)
        for fast in (False, True):
            torch.backends.mha.set_fastpath_enabled(fast)
            activations, grads, wanted = transformers.reference_inputs(
                model, module, reshape, x, targets
            )
            with ModelHooks(model) as hooks:
                for method, oracle in transformers.GRADIENT_ORACLES.items():
                    if fast and (name != "vit_b_16" or method != "xgradcam"):
                        continue
                    ours = torch.cat(get_method(method)(hooks, layer)(x, targets).maps)
                    theirs = transformers.reference_maps(
                        oracle, model, module, reshape, x, wanted, activations, grads
                    )
                    if method == "eigencam":
                        theirs = theirs * torch.sign((ours * theirs).sum(dim=(1, 2)))[:, None, None]
                    label = method + (" (attention fast path on)" if fast else "")
                    rows.setdefault((label, "grad-cam"), {})[name] = (
                        f"{difference(ours, theirs):.1e}"
                    )
        torch.backends.mha.set_fastpath_enabled(False)
        channels = transformers.SCORECAM_CHANNELS
        with ModelHooks(model) as hooks:
            ours = torch.cat(
                get_method("scorecam")(hooks, layer, max_channels=channels)(x, targets).maps
            )
        theirs = transformers.reference_scorecam(model, layer, reshape, x, targets)
        rows.setdefault((f"scorecam ({channels} strongest channels)", "grad-cam"), {})[name] = (
            f"{difference(ours, theirs):.1e}"
        )
    torch.backends.mha.set_fastpath_enabled(fast_path)
    print_table("Transformers (224 x 224, batch of 2)", sorted(transformers.CASES), rows)


def guided_table() -> None:
    rows: dict[tuple[str, str], list[str]] = {}
    for _, model, layer, _, x, _ in cnn_cases():
        with torch.no_grad():
            top2 = model(x).topk(2).indices.tolist()
        for method in ("guided_backprop", "guided_gradcam"):
            with ModelHooks(model) as hooks:
                result = make_method(method, hooks, layer)(x, top2)
            worst = 0.0
            for j in range(2):
                ours = torch.stack([maps[j] for maps in result.maps])
                theirs = captum_attribution(method, model, layer, x, [t[j] for t in top2])
                worst = max(worst, difference(ours, theirs.abs().amax(dim=1)))
            rows.setdefault((method, "captum"), []).append(f"{worst:.1e}")
    print_table("Guided methods (maps at input resolution)", list(CASES), rows)


def confidence_table() -> None:
    cells = []
    for _, model, layer, _, x, targets in cnn_cases():
        first = [t[0] for t in targets]
        with ModelHooks(model) as hooks:
            result = get_method("gradcam")(hooks, layer)(x, first)
        heatmaps = [upsample_maps(normalize_maps(m), tuple(x.shape[-2:])) for m in result.maps]
        probabilities = result.logits.softmax(dim=1)
        ours = score_maps(model, x, heatmaps, result.targets, probabilities, steps=2)
        theirs = CamMultImageConfidenceChange()(
            x,
            np.stack([h[0].numpy() for h in heatmaps]),
            [ClassifierOutputSoftmaxTarget(t) for t in first],
            model,
        )
        mine = np.asarray([scores[0].confidence_change for scores in ours])
        cells.append(f"{np.abs(mine - theirs).max():.1e}")
    print_table(
        "confidence_change (probability units)",
        list(CASES),
        {("confidence_change", "grad-cam CamMultImageConfidenceChange"): cells},
    )


def main() -> None:
    warnings.simplefilter("ignore")
    cnn_table()
    transformer_table()
    guided_table()
    confidence_table()


if __name__ == "__main__":
    main()

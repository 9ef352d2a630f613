"""How far our CAM maps are from the reference implementations, per method and model.

Uses the same oracles and cases as tests/explain/test_methods.py (which asserts <= 1e-4) and prints
the measured maximum absolute difference of the maps normalised by their maximum.

    python -m bench.oracles 2>/dev/null   # (the reference Score-CAM draws progress bars on stderr)
"""

from __future__ import annotations

import warnings

import torch
from captum.attr import LayerGradCam

from explain.hooks import ModelHooks
from explain.methods import get_method, normalize_maps
from tests.conftest import SmallCNN
from tests.explain.test_methods import CASES, ORACLES, oracle_maps


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((normalize_maps(ours.relu()) - normalize_maps(theirs.relu())).abs().max())


def main() -> None:
    warnings.simplefilter("ignore")
    print("| method | oracle | " + " | ".join(CASES) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in CASES) + " |")
    rows: dict[tuple[str, str], list[str]] = {}
    for factory, layer, oracle_layer, shape, targets in CASES.values():
        torch.manual_seed(0)
        model = (factory() if factory else SmallCNN()).eval()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        first = [t[0] for t in targets]
        with ModelHooks(model) as hooks:
            for method in ORACLES:
                ours = torch.cat(get_method(method)(hooks, layer)(x, first).maps)
                theirs = oracle_maps(method, model, oracle_layer(model), x, first)
                if method == "eigencam":
                    theirs = theirs * torch.sign((ours * theirs).sum(dim=(1, 2)))[:, None, None]
                rows.setdefault((method, "grad-cam"), []).append(f"{difference(ours, theirs):.1e}")
            ours = torch.cat(get_method("gradcam")(hooks, layer)(x, first).maps)
        theirs = LayerGradCam(model, oracle_layer(model)).attribute(
            x, target=first, relu_attributions=True
        )
        rows.setdefault(("gradcam", "captum"), []).append(
            f"{difference(ours, theirs.detach()[:, 0]):.1e}"
        )
    for (method, oracle), cells in rows.items():
        print(f"| {method} | {oracle} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

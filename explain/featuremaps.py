"""Feature maps: the outputs of any set of layers, captured in one forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from explain.hooks import ModelHooks
from explain.layers import eval_mode, spatial_output

__all__ = ["FeatureMaps", "capture_feature_maps"]


@dataclass(frozen=True)
class FeatureMaps:
    """Attributes:
    logits: The model's output for the batch.
    maps: For each requested layer, its ``(N, C, H, W)`` output (a transformer layer's tokens or
        channels-last grid read through its spatial view).
    """

    logits: torch.Tensor
    maps: dict[str, torch.Tensor]


def capture_feature_maps(
    hooks: ModelHooks, inputs: torch.Tensor, layers: Sequence[str]
) -> FeatureMaps:
    """Run ``inputs`` through the model once and keep the outputs of ``layers``.

    Raises:
        UnknownLayerError: a layer is not hooked.
        AmbiguousLayerError: a layer ran more than once in the pass.
        LayerNotSpatialError: a layer's output does not read as a ``(N, C, H, W)`` map.
    """
    model = hooks.model
    size = inputs.shape[-2:]
    with eval_mode(model), torch.inference_mode(), hooks.capture(layers) as capture:
        logits = model(inputs)
        maps = {layer: spatial_output(capture, layer, size) for layer in layers}
    return FeatureMaps(logits=logits, maps=maps)

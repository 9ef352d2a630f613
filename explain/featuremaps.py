"""Feature maps: the outputs of any set of layers, captured in one forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from explain.hooks import ModelHooks
from explain.layers import eval_mode, map_of, spatial_output

if TYPE_CHECKING:
    from explain.inference import ModelGraphs

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
    hooks: ModelHooks,
    inputs: torch.Tensor,
    layers: Sequence[str],
    *,
    graphs: ModelGraphs | None = None,
) -> FeatureMaps:
    """Run ``inputs`` through the model once and keep the outputs of ``layers``.

    With ``graphs``, a graph built earlier for exactly these layers
    (:meth:`~explain.inference.ModelGraphs.features`) runs instead of the eager model, unless a
    capture is open on the hooks here (it must see every layer the eager model runs).

    Raises:
        UnknownLayerError: a layer is not hooked.
        AmbiguousLayerError: a layer ran more than once in the pass.
        LayerNotSpatialError: a layer's output does not read as a ``(N, C, H, W)`` map.
    """
    model = hooks.model
    size = inputs.shape[-2:]
    graph = None if graphs is None or hooks.capturing else graphs.features(layers)
    if graph is not None:
        logits, *outputs = graph(inputs)
        maps = {layer: map_of(out, layer, size) for layer, out in zip(layers, outputs, strict=True)}
        return FeatureMaps(logits=logits, maps=maps)
    with eval_mode(model), torch.inference_mode(), hooks.capture(layers) as capture:
        logits = model(inputs)
        maps = {layer: spatial_output(capture, layer, size) for layer in layers}
    return FeatureMaps(logits=logits, maps=maps)

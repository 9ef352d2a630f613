"""CAM methods that need no gradients: the classifier's weights, masked inputs, or the activations'
principal component."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from explain.errors import MethodNotApplicableError
from explain.hooks import ModelHooks
from explain.methods.base import CAMMethod, register_method
from explain.views import SpatialActivation

if TYPE_CHECKING:
    from explain.inference import ModelGraphs

__all__ = ["CAM", "EigenCAM", "ScoreCAM"]


@register_method
class CAM(CAMMethod):
    """CAM: the classifier's weights for the class applied to the map it pools
    (Zhou et al., CVPR 2016).

    Applies only where ``logits = Linear(global_average_pool(layer output))``; this is checked
    numerically on every call, so a model whose head does anything else between the layer and the
    linear layer is refused with :class:`MethodNotApplicableError`.

    Args:
        hooks: Hooks attached to the model.
        layer: The layer whose output the head pools.
        head: Name of the linear classifier; default: the model's last ``nn.Linear``.
        graphs: The model's optimised graphs (see :class:`CAMMethod`).
    """

    name = "cam"
    applies_relu = False
    rtol = 1e-3

    def __init__(
        self,
        hooks: ModelHooks,
        layer: str,
        head: str | None = None,
        *,
        graphs: ModelGraphs | None = None,
    ) -> None:
        super().__init__(hooks, layer, graphs=graphs)
        if head is None:
            linears = [n for n, m in hooks.model.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise MethodNotApplicableError("cam needs a model whose head is a linear layer")
            head = linears[-1]
        module = dict(hooks.model.named_modules()).get(head)
        if not isinstance(module, nn.Linear):
            raise MethodNotApplicableError(f"cam needs a linear head; {head!r} is not nn.Linear")
        self.head = head
        self.linear = module

    def compute(
        self,
        inputs: torch.Tensor,
        activation: SpatialActivation,
        logits: torch.Tensor,
        targets: list[list[int]],
    ) -> list[torch.Tensor]:
        weight, bias = self.linear.weight.detach(), self.linear.bias
        values = activation.maps
        pooled = values.mean(dim=(2, 3))
        if pooled.shape[1] != weight.shape[1]:
            self._refuse(
                f"it has {pooled.shape[1]} channels and {self.head!r} takes {weight.shape[1]}"
            )
        expected = F.linear(pooled, weight, None if bias is None else bias.detach())
        scale = logits.detach().abs().amax().clamp_min(1.0)
        if not torch.allclose(expected, logits.detach(), rtol=0, atol=self.rtol * float(scale)):
            self._refuse(f"the logits are not {self.head!r} applied to its global average")
        return [torch.einsum("tc,chw->thw", weight[t], values[i]) for i, t in enumerate(targets)]

    def _refuse(self, why: str) -> None:
        raise MethodNotApplicableError(
            f"cam needs a global-average-pooling + linear head fed by layer {self.layer!r}, "
            f"but {why}; use gradcam (same maps where cam applies) or another method"
        )


@register_method
class ScoreCAM(CAMMethod):
    """Score-CAM: channels weighted by the target logit of the input masked by each upsampled,
    min-max scaled channel, softmaxed over channels (Wang et al., CVPRW 2020).

    Costs one forward pass per channel and image, evaluated ``batch_size`` masks at a time: 2,048
    forward passes per image at ResNet-50's last stage. ``max_channels`` bounds the cost by scoring
    only the channels with the highest mean activation (the others get no weight); the rest of a map
    is the weighted sum of small activations, so the normalised map changes little. The masked
    passes run the whole model as an optimised graph where ``graphs`` has one.

    Args:
        hooks: Hooks attached to the model.
        layer: The layer whose channels become masks.
        batch_size: Masked inputs per forward pass (8: through the whole-model graph, batches of
            4 to 32 cost the same per image within 5% on 2 CPU cores, docs/benchmarks.md; a
            small batch keeps the memory small).
        max_channels: Score at most this many channels per image; ``None``: all (the paper).
        graphs: The model's optimised graphs (see :class:`CAMMethod`).
    """

    name = "scorecam"

    def __init__(
        self,
        hooks: ModelHooks,
        layer: str,
        batch_size: int = 8,
        max_channels: int | None = None,
        *,
        graphs: ModelGraphs | None = None,
    ) -> None:
        super().__init__(hooks, layer, graphs=graphs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_channels is not None and max_channels < 1:
            raise ValueError(f"max_channels must be >= 1 or None, got {max_channels}")
        self.batch_size = batch_size
        self.max_channels = max_channels

    def cost(self, channels: int, targets: int = 1) -> float:
        """One forward pass, then one per scored channel (every class is read off those passes)."""
        scored = channels if self.max_channels is None else min(channels, self.max_channels)
        return 1.0 + scored

    def compute(
        self,
        inputs: torch.Tensor,
        activation: SpatialActivation,
        logits: torch.Tensor,
        targets: list[list[int]],
    ) -> list[torch.Tensor]:
        activations = activation.maps
        maps = []
        with torch.no_grad():
            for image, image_activations, image_targets in zip(
                inputs, activations, targets, strict=True
            ):
                if self.max_channels is not None and self.max_channels < len(image_activations):
                    strongest = image_activations.mean(dim=(1, 2)).topk(self.max_channels).indices
                    image_activations = image_activations[strongest]
                masks = F.interpolate(
                    image_activations[None],
                    size=inputs.shape[-2:],
                    mode="bilinear",
                    align_corners=True,
                )[0]
                low = masks.amin(dim=(1, 2), keepdim=True)
                high = masks.amax(dim=(1, 2), keepdim=True)
                masks = (masks - low) / (high - low + 1e-8)
                scores = torch.cat(
                    [
                        self.forward(image[None] * chunk[:, None])[:, image_targets]
                        for chunk in masks.split(self.batch_size)
                    ]
                )  # (C, T)
                weights = scores.softmax(dim=0).T  # (T, C)
                maps.append(torch.einsum("tc,chw->thw", weights, image_activations))
        return maps


@register_method
class EigenCAM(CAMMethod):
    """Eigen-CAM: the activations projected on their first principal component
    (Muhammad & Yeasin, IJCNN 2020).

    Class-agnostic: every target of an image gets the same map. The component's sign is chosen so
    that the map's largest magnitude is positive.
    """

    name = "eigencam"
    applies_relu = False
    class_specific = False

    def compute(
        self,
        inputs: torch.Tensor,
        activation: SpatialActivation,
        logits: torch.Tensor,
        targets: list[list[int]],
    ) -> list[torch.Tensor]:
        values = torch.nan_to_num(activation.maps.float())
        n, c, h, w = values.shape
        samples = values.reshape(n, c, h * w).transpose(1, 2)  # (n, positions, channels)
        samples = samples - samples.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(samples, full_matrices=False)
        projections = torch.einsum("npc,nc->np", samples, vh[:, 0, :]).reshape(n, h, w)
        flip = projections.amin(dim=(1, 2)).abs() > projections.amax(dim=(1, 2)).abs()
        projections = torch.where(flip[:, None, None], -projections, projections)
        return [projections[i].expand(len(t), h, w).clone() for i, t in enumerate(targets)]

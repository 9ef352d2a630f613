"""CAM methods built from gradients of the target logit with respect to the layer's activations."""

from __future__ import annotations

import torch

from explain.methods.base import GradientMethod, register_method

__all__ = ["GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "XGradCAM"]


@register_method
class GradCAM(GradientMethod):
    """Grad-CAM: channels weighted by their mean gradient (Selvaraju et al., ICCV 2017)."""

    name = "gradcam"

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3))


@register_method
class GradCAMPlusPlus(GradientMethod):
    """Grad-CAM++: positive gradients weighted by higher-order terms (Chattopadhay et al., WACV 2018).

    Uses the usual closed form for an exponential output, with the second and third derivatives
    approximated by powers of the first.
    """

    name = "gradcam++"
    eps = 1e-6

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        grads_2 = grads.pow(2)
        grads_3 = grads_2 * grads
        activation_sums = activations.sum(dim=(2, 3), keepdim=True)
        alpha = grads_2 / (2 * grads_2 + activation_sums * grads_3 + self.eps)
        alpha = torch.where(grads != 0, alpha, 0.0)
        return (alpha * grads.relu()).sum(dim=(2, 3))


@register_method
class XGradCAM(GradientMethod):
    """XGrad-CAM: gradients weighted by normalised activations (Fu et al., BMVC 2020).

    Each channel's weight divides by the channel's activation sum. Where activations are signed (a
    transformer's LayerNorm outputs) a sum can cancel to near zero (0.01 against a typical 50 at a
    ViT's ln_1), which amplifies float32 rounding: about 1e-5 of the map's peak there. The weights
    are accumulated in float64, which brings it under 1e-6.
    """

    name = "xgradcam"
    eps = 1e-7

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        values, grads = activations.double(), grads.double()
        activation_sums = values.sum(dim=(2, 3), keepdim=True)
        weights = (grads * values / (activation_sums + self.eps)).sum(dim=(2, 3))
        return weights.to(activations.dtype)


@register_method
class LayerCAM(GradientMethod):
    """LayerCAM: every position weighted by its own positive gradient (Jiang et al., TIP 2021)."""

    name = "layercam"

    def combine(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads.relu() * activations).sum(dim=1)


@register_method
class HiResCAM(GradientMethod):
    """HiResCAM: element-wise gradient times activation, summed over channels (Draelos & Carin, 2020)."""

    name = "hirescam"

    def combine(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * activations).sum(dim=1)

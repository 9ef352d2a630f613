"""The CAM family, and the pixel-level Guided Backpropagation and Guided Grad-CAM.
``get_method(name)`` returns a method class; instantiate it with the model's hooks and a layer
(none for ``guided_backprop``), then call it on a batch.

Example:
    >>> method = get_method("gradcam")(hooks, "layer4")
    >>> result = method(images, targets=[[281, 285], [948]])
    >>> result.maps[0].shape            # two targets for the first image, at layer resolution
    torch.Size([2, 7, 7])
"""

from explain.methods.activation import CAM, EigenCAM, ScoreCAM
from explain.methods.base import (
    CAMMethod,
    CAMResult,
    GradientMethod,
    Targets,
    get_method,
    method_names,
    normalize_maps,
    register_method,
    resolve_targets,
    upsample_maps,
)
from explain.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from explain.methods.guided import GuidedBackprop, GuidedGradCAM

__all__ = [
    "CAM",
    "CAMMethod",
    "CAMResult",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientMethod",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "Targets",
    "XGradCAM",
    "get_method",
    "method_names",
    "normalize_maps",
    "register_method",
    "resolve_targets",
    "upsample_maps",
]

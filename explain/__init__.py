"""Explanations for image classifiers through persistent, inert PyTorch hooks.

- :mod:`explain.hooks`: hooks attached once per model, per-call captures.
- :mod:`explain.featuremaps`: outputs of any set of layers in one forward pass.
- :mod:`explain.views`: transformer tokens and channels-last grids read as ``(C, h, w)`` maps.
- :mod:`explain.methods`: CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Score-CAM, Eigen-CAM,
  Guided Backpropagation, Guided Grad-CAM.
- :mod:`explain.faithfulness`: confidence change, deletion and insertion AUCs of a map.
- :mod:`explain.render`: colour maps, overlays, feature-map grids, PNG/base64.
- :mod:`explain.models`: the model registry.
"""

from explain.errors import ExplainError
from explain.featuremaps import FeatureMaps, capture_feature_maps
from explain.hooks import Capture, ModelHooks, find_layer
from explain.layers import LayerInfo, LayerTable, eval_mode, inspect_layers
from explain.methods import CAMResult, get_method, method_names, normalize_maps, upsample_maps

__all__ = [
    "CAMResult",
    "Capture",
    "ExplainError",
    "FeatureMaps",
    "LayerInfo",
    "LayerTable",
    "ModelHooks",
    "capture_feature_maps",
    "eval_mode",
    "find_layer",
    "get_method",
    "inspect_layers",
    "method_names",
    "normalize_maps",
    "upsample_maps",
]

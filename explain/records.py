"""One image's answer as a record: top classes, feature maps, class activation maps.

Each endpoint (``predict``, ``featuremaps``, ``gradcam``) has a *plan*: from its options it names the
model task to run, the classes to explain, and how to turn one image's output into a record. The
options are checked when the plan is made, before any image is decoded. Pictures in a record are
:class:`Picture` objects, drawn and encoded only at the edge that needs them: base64 in an HTTP
answer, a PNG file beside a batch's ``results.jsonl``, nothing at all when no images are wanted.

Example:
    >>> plan = make_plan("gradcam", loaded, target=["tabby"], return_cam=True)
    >>> outputs = runner(plan.task, torch.stack([image.tensor]), [plan.targets])
    >>> record = render_record(plan, image, outputs[0])
    >>> record["explanations"][0]["overlay_png"].encode()   # PNG bytes
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explain.errors import InvalidOptionError, LayerRequiredError, UnknownNameError
from explain.images import PreparedImage
from explain.methods import get_method
from explain.models import LoadedModel
from explain.render import (
    PNG_COMPRESS_LEVEL,
    colormap_index,
    colormap_lut,
    encode_png,
    feature_grid,
    overlay,
)
from explain.tasks import CAMTask, FeatureMapTask, ImageOutput, PredictTask

__all__ = [
    "DEFAULT_TOP_K",
    "ENDPOINTS",
    "PICTURE_FIELDS",
    "Picture",
    "Plan",
    "make_plan",
    "map_pictures",
    "plan_featuremaps",
    "plan_gradcam",
    "plan_options",
    "plan_predict",
    "render_record",
]

DEFAULT_TOP_K = 5
ENDPOINTS = ("predict", "featuremaps", "gradcam")
PICTURE_FIELDS: Mapping[str, str] = {
    "png": "png_file",
    "overlay_png": "overlay_file",
    "heatmap_png": "heatmap_file",
}
"""Record fields that hold pictures, and their names where the picture is a file instead."""


@dataclass(frozen=True, eq=False)
class Picture:
    """A PNG to be: drawn (``(H, W)`` or ``(H, W, 3)`` uint8) and encoded only when asked.

    Attributes:
        draw: Returns the pixels.
        palette: A ``(256, 3)`` colour table: the pixels are indices (an indexed-colour PNG).
    """

    draw: Callable[[], np.ndarray]
    palette: np.ndarray | None = None

    def encode(self, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
        return encode_png(self.draw(), compress_level, self.palette)


Renderer = Callable[[PreparedImage, ImageOutput], dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    """What one request (or batch run) asks of a model.

    Attributes:
        endpoint: ``predict``, ``featuremaps`` or ``gradcam``.
        task: The model task (equal tasks share a batch).
        targets: The classes to explain for every image, or ``None`` (each image's top-1).
        render: One image and its output to a record.
    """

    endpoint: str
    task: Hashable
    targets: list[int] | None
    render: Renderer


def _top_k(loaded: LoadedModel, top_k: int | None) -> Callable[[torch.Tensor], list[dict]]:
    classes = loaded.num_classes
    k = top_k if top_k is not None else min(DEFAULT_TOP_K, classes)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= classes:
        raise InvalidOptionError(
            f"top_k is {k!r} but model {loaded.name!r} has {classes} classes; use 1 to {classes}"
        )
    labels = loaded.labels

    def top(probabilities: torch.Tensor) -> list[dict[str, Any]]:
        scores, indices = probabilities.topk(k)
        return [
            {"index": i, "label": labels[i], "score": round(s, 6)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]

    return top


def plan_predict(loaded: LoadedModel, *, top_k: int | None = None) -> Plan:
    """Top classes with softmax scores."""
    top = _top_k(loaded, top_k)
    return Plan(
        "predict", PredictTask(), None, lambda image, output: {"top_k": top(output.probabilities)}
    )


def plan_featuremaps(
    loaded: LoadedModel,
    *,
    layers: Sequence[str] | None = None,
    max_channels: int = 64,
    top_k: int | None = None,
) -> Plan:
    """Top classes and the outputs of ``layers`` (default: the model's feature stages) as grids.

    Raises:
        LayerRequiredError: no layers given and the model names no default ones.
        UnknownLayerError, AmbiguousLayerError, LayerNotSpatialError: a layer that cannot be shown.
        InvalidOptionError: ``top_k`` or ``max_channels`` out of range.
    """
    top = _top_k(loaded, top_k)
    layers = list(dict.fromkeys(layers or loaded.feature_layers))
    if not layers:
        raise LayerRequiredError(
            f"model {loaded.name!r} names no default feature layers; name one or more of its "
            "spatial layers"
        )
    for layer in layers:
        loaded.layers.check(layer, spatial=True)
    if max_channels < 1:
        raise InvalidOptionError(f"max_channels must be at least 1, got {max_channels}")

    def render(image: PreparedImage, output: ImageOutput) -> dict[str, Any]:
        assert output.feature_maps is not None  # a feature-map task made it; not input validation
        maps = []
        for layer in layers:
            feature_map = output.feature_maps[layer]
            maps.append(
                {
                    "layer": layer,
                    "shape": list(feature_map.shape),
                    "channels_shown": min(max_channels, feature_map.shape[0]),
                    "png": Picture(lambda fm=feature_map: feature_grid(fm, max_channels)),
                }
            )
        return {"top_k": top(output.probabilities), "featuremaps": maps}

    return Plan("featuremaps", FeatureMapTask(tuple(layers)), None, render)


def plan_gradcam(
    loaded: LoadedModel,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: Sequence[int | str] | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    return_cam: bool = False,
    faithfulness: bool = False,
    top_k: int | None = None,
) -> Plan:
    """Top classes and a class activation map per target class (default: top-1), as a heatmap
    and an overlay at the model's input size, optionally the raw map, and optionally the map's
    faithfulness scores (:mod:`explain.faithfulness`; about 33 more forward passes per map).

    ``guided_backprop`` explains at the input pixels and takes no layer (its record's ``layer`` is
    ``None``); for it and ``guided_gradcam`` the raw map has the input's resolution.

    Raises:
        UnknownMethodError, UnknownColormapError, UnknownLabelError, AmbiguousLabelError,
        TargetOutOfRangeError: a name or class that does not exist (or names several).
        MethodNotApplicableError: a method the model's structure does not allow (guided methods on
            a model with activations that have no guided rule).
        LayerRequiredError: no layer given and the model has no default CAM layer.
        UnknownLayerError, AmbiguousLayerError, LayerNotSpatialError: a layer that cannot be explained.
        InvalidOptionError: ``top_k`` or ``alpha`` out of range, a layer for ``guided_backprop``,
            ``faithfulness`` not a bool.
    """
    top = _top_k(loaded, top_k)
    method_class = get_method(method)
    method_class.check_model(loaded.model)
    if not method_class.needs_layer:
        if layer:
            raise InvalidOptionError(
                f"{method} explains the input pixels and takes no layer; leave layer out"
            )
    else:
        layer = layer or loaded.target_layer
        if layer is None:
            raise LayerRequiredError(
                f"model {loaded.name!r} has no default CAM layer; name one of its spatial layers"
            )
        loaded.layers.check(layer, spatial=True)
    if not isinstance(faithfulness, bool):
        raise InvalidOptionError(f"faithfulness must be true or false, got {faithfulness!r}")
    targets = [loaded.labels.resolve(t) for t in target] if target else None
    if not 0.0 <= alpha <= 1.0:
        raise InvalidOptionError(f"alpha must be in [0, 1], got {alpha}")
    lut = colormap_lut(colormap)

    def render(image: PreparedImage, output: ImageOutput) -> dict[str, Any]:
        assert output.cams is not None and output.heatmaps is not None  # made by a CAM task
        assert output.targets is not None
        explanations = []
        for j, index in enumerate(output.targets):
            heat_index = colormap_index(output.heatmaps[j])
            explanation: dict[str, Any] = {
                "index": index,
                "label": loaded.labels[index],
                "score": round(float(output.probabilities[index]), 6),
                "method": method,
                "layer": layer,
                "overlay_png": Picture(
                    lambda h=heat_index: overlay(image.pixels, np.take(lut, h, axis=0), alpha)
                ),
                "heatmap_png": Picture(lambda h=heat_index: h, palette=lut),
            }
            if output.faithfulness is not None:
                explanation["faithfulness"] = output.faithfulness[j].as_dict()
            if return_cam:
                cam = output.cams[j]
                values = [[round(v, 6) for v in row] for row in cam.tolist()]
                explanation["cam"] = {"shape": list(cam.shape), "values": values}
            explanations.append(explanation)
        return {"top_k": top(output.probabilities), "explanations": explanations}

    return Plan("gradcam", CAMTask(method, layer or None, faithfulness), targets, render)


_PLANS: dict[str, Callable[..., Plan]] = {
    "predict": plan_predict,
    "featuremaps": plan_featuremaps,
    "gradcam": plan_gradcam,
}


def make_plan(endpoint: str, loaded: LoadedModel, **options: Any) -> Plan:
    """The plan of ``endpoint`` for ``loaded`` with ``options`` (the endpoint's option names).

    Raises:
        UnknownNameError: an unknown endpoint.
        TypeError: an option the endpoint does not take.
    """
    if endpoint not in _PLANS:
        raise UnknownNameError(endpoint, _PLANS)
    return _PLANS[endpoint](loaded, **options)


def plan_options(endpoint: str) -> tuple[str, ...]:
    """The option names ``endpoint``'s plan takes (what :func:`make_plan` accepts for it).

    Raises:
        UnknownNameError: an unknown endpoint.
    """
    if endpoint not in _PLANS:
        raise UnknownNameError(endpoint, _PLANS)
    parameters = inspect.signature(_PLANS[endpoint]).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def render_record(plan: Plan, image: PreparedImage, output: ImageOutput) -> dict[str, Any]:
    """One image's record: the plan's fields, then ``warnings``."""
    return plan.render(image, output) | {"warnings": image.warnings}


def map_pictures(
    record: dict[str, Any],
    convert: Callable[[Picture, str, dict[str, Any]], Any],
    *,
    rename: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of ``record`` with every :class:`Picture` replaced by ``convert(picture, field,
    entry)`` (``entry``: the dict that holds it, e.g. a feature map with its ``layer``), and its
    field renamed by ``rename`` (e.g. :data:`PICTURE_FIELDS` for files)."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(item, Picture):
                    out[(rename or {}).get(key, key)] = convert(item, key, value)
                else:
                    out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(record)

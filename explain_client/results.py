"""Typed answers: class scores, feature maps and explanations, with their PNGs decoded on demand."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["PNG_FIELDS", "ClassScore", "Explanation", "FeatureMap", "Result"]

PNG_FIELDS = ("png", "overlay_png", "heatmap_png")
"""Fields of an answer that hold a base64 PNG (the HTTP contract's names)."""


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class FeatureMap:
    """One layer's output as a grid of channels.

    Attributes:
        png: The grid as PNG bytes; :attr:`image` decodes it.
    """

    layer: str
    shape: tuple[int, ...]
    channels_shown: int
    png: bytes

    @cached_property
    def image(self) -> Image.Image:
        return _image(self.png)


@dataclass(frozen=True)
class Explanation:
    """A class activation map for one class.

    Attributes:
        overlay_png: The heatmap over the image as the model saw it (PNG bytes).
        heatmap_png: The heatmap alone, indexed colour (PNG bytes).
        layer: Where the map was computed; ``None`` for methods that explain the input pixels
            (``guided_backprop``).
        cam: The raw map at the layer's resolution (the input's, for the guided methods), with
            ``return_cam``.
        faithfulness: ``confidence_change``, ``deletion_auc`` and ``insertion_auc``, with
            ``faithfulness=True``.
        data: Every field as answered (PNGs as bytes), including any this client does not know.
    """

    index: int
    label: str
    score: float
    method: str
    layer: str | None
    overlay_png: bytes
    heatmap_png: bytes
    cam: np.ndarray | None = None
    faithfulness: dict[str, float] | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def overlay(self) -> Image.Image:
        return _image(self.overlay_png)

    @cached_property
    def heatmap(self) -> Image.Image:
        """Mode ``P``: pixel values are the heat (0-255), the palette is the colour map."""
        return _image(self.heatmap_png)


@dataclass(frozen=True)
class Result:
    """One image's answer.

    Attributes:
        model: The model that answered.
        top_k: The top classes.
        featuremaps: From ``featuremaps``, else ``None``.
        explanations: From ``gradcam``, else ``None``.
        warnings: How the image was read, when notable.
        data: The answer as sent, with every base64 PNG turned into bytes (fields this client
            does not know included).
    """

    model: str
    top_k: list[ClassScore]
    featuremaps: list[FeatureMap] | None = None
    explanations: list[Explanation] | None = None
    warnings: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, model: str, answer: dict[str, Any]) -> Result:
        """One entry of an answer's ``results``."""
        data = decode_pngs(answer)
        featuremaps = explanations = None
        if "featuremaps" in data:
            featuremaps = [
                FeatureMap(m["layer"], tuple(m["shape"]), m["channels_shown"], m["png"])
                for m in data["featuremaps"]
            ]
        if "explanations" in data:
            explanations = [_explanation(e) for e in data["explanations"]]
        return cls(
            model=model,
            top_k=[ClassScore(s["index"], s["label"], s["score"]) for s in data["top_k"]],
            featuremaps=featuremaps,
            explanations=explanations,
            warnings=list(data.get("warnings", [])),
            data=data,
        )


def _explanation(entry: dict[str, Any]) -> Explanation:
    cam = entry.get("cam")
    return Explanation(
        index=entry["index"],
        label=entry["label"],
        score=entry["score"],
        method=entry["method"],
        layer=entry.get("layer"),
        overlay_png=entry["overlay_png"],
        heatmap_png=entry["heatmap_png"],
        cam=None
        if cam is None
        else np.asarray(cam["values"], dtype=np.float32).reshape(cam["shape"]),
        faithfulness=entry.get("faithfulness"),
        data=entry,
    )


def decode_pngs(value: Any) -> Any:
    """A copy of an answer with every base64 PNG field (:data:`PNG_FIELDS`) as bytes."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item)
            if key in PNG_FIELDS and isinstance(item, str)
            else decode_pngs(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [decode_pngs(item) for item in value]
    return value

"""Errors raised by the library.

Each error carries a stable ``code`` so that a caller (the HTTP service, a batch job) can map it to
its own error vocabulary without parsing messages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import ClassVar

__all__ = [
    "AmbiguousLabelError",
    "AmbiguousLayerError",
    "ExplainError",
    "ExtremeAspectRatioError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidOptionError",
    "InvalidWeightsError",
    "LayerNotSpatialError",
    "LayerRequiredError",
    "MethodNotApplicableError",
    "TargetOutOfRangeError",
    "UnknownLabelError",
    "UnknownLayerError",
    "UnknownMethodError",
    "UnknownModelError",
    "UnknownNameError",
]


class ExplainError(Exception):
    """Base class of every error the library raises on purpose."""

    code: ClassVar[str] = "explain_error"


class UnknownNameError(ExplainError, LookupError):
    """A name (model, layer, method, label) that is not among the valid ones.

    The message lists the closest valid names, or all of them when there are few.
    """

    kind: ClassVar[str] = "name"

    def __init__(self, name: str, choices: Iterable[str]) -> None:
        self.name = name
        self.choices = sorted(set(choices))
        super().__init__(self._message())

    def _message(self) -> str:
        close = difflib.get_close_matches(self.name, self.choices, n=5, cutoff=0.5)
        if len(self.choices) <= 12:
            listing = "valid: " + ", ".join(self.choices)
        elif close:
            listing = "did you mean: " + ", ".join(close)
        else:
            listing = f"{len(self.choices)} valid names, e.g. " + ", ".join(self.choices[:8])
        return f"unknown {self.kind} {self.name!r}; {listing}"

    def __str__(self) -> str:  # LookupError subclasses must not quote their message
        return self.args[0]


class UnknownModelError(UnknownNameError):
    code = "unknown_model"
    kind = "model"


class UnknownLayerError(UnknownNameError):
    code = "unknown_layer"
    kind = "layer"


class UnknownMethodError(UnknownNameError):
    code = "unknown_method"
    kind = "method"


class UnknownLabelError(UnknownNameError):
    code = "unknown_label"
    kind = "class label"


class AmbiguousLayerError(ExplainError, ValueError):
    """A module that runs more than once per forward pass, so its output is not one map."""

    code = "ambiguous_layer"


class LayerNotSpatialError(ExplainError, ValueError):
    """A layer whose output is not a ``(N, C, H, W)`` map."""

    code = "layer_not_spatial"


class MethodNotApplicableError(ExplainError, ValueError):
    """A CAM method that the model's structure does not support (e.g. ``cam`` without a GAP head)."""

    code = "method_not_applicable"


class AmbiguousLabelError(ExplainError, ValueError):
    """A class label that names several classes."""

    code = "ambiguous_label"

    def __init__(self, label: str, indices: Sequence[int]) -> None:
        self.label = label
        self.indices = list(indices)
        super().__init__(
            f"class label {label!r} names several classes (indices {self.indices}); "
            "send the index instead"
        )


class TargetOutOfRangeError(ExplainError, ValueError):
    """A class index outside ``[0, num_classes)``."""

    code = "target_out_of_range"


class InvalidWeightsError(ExplainError, ValueError):
    """A weights spec that cannot be loaded into the chosen architecture."""

    code = "invalid_weights"


class InvalidOptionError(ExplainError, ValueError):
    """An option out of range or of the wrong type (``top_k`` beyond the classes, ...)."""

    code = "invalid_option"


class LayerRequiredError(ExplainError, ValueError):
    """The model has no default layer for what was asked; the caller must name one."""

    code = "layer_required"


class InvalidImageError(ExplainError, ValueError):
    """Bytes that are not a decodable image: empty, truncated, corrupt, or another format."""

    code = "invalid_image"


class ImageTooLargeError(ExplainError, ValueError):
    """An image over the pixel limit, judged from its header before decoding."""

    code = "image_too_large"


class ExtremeAspectRatioError(ExplainError, ValueError):
    """An image whose sides differ beyond the aspect-ratio limit."""

    code = "extreme_aspect_ratio"

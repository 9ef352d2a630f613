"""Spatial views of layer outputs: a ``(N, C, h, w)`` map from whatever layout a layer emits.

Convolutional layers emit ``(N, C, h, w)`` maps. Transformers do not: a ViT block emits a token
sequence ``(N, T, C)`` (a class token, sometimes register tokens, then one token per patch, row by
row), and a Swin stage emits a channels-last grid ``(N, h, w, C)``. A :class:`SpatialView` is
worked out from a layer's output shape and the model's input size alone, so no per-architecture
table is needed, and turns such an output into a ``(N, C, h, w)`` map by indexing only (dropping the
leading extra tokens, reshaping, permuting). It is therefore differentiable, and the gradient of
a view is the view of the gradient: ``view(autograd.grad(score, output))`` is the gradient of the
score with respect to the map.

How a shape is read, for an input of ``H x W`` pixels (a grid *fits* the input when its sides are
proportional to ``H`` and ``W`` up to one cell of rounding on each side):

- ``(C, h, w)`` per image: channels first, when ``(h, w)`` fits (every convolutional map).
- ``(h, w, C)`` per image: channels last, when ``(h, w)`` fits and ``(C, h, w)`` does not
  (Swin's stages, and the layers inside its blocks).
- ``(T, C)`` per image: tokens, when dropping the first ``k`` tokens (``k`` from 0 to
  :data:`MAX_EXTRA_TOKENS`, the smallest that works) leaves ``h * w`` patch tokens for a grid that
  fits exactly (sides strictly within one cell). Extra tokens are assumed to lead the sequence, as
  in torchvision's ViT (class token first) and in register-token models.
- Anything else (a vector of logits, MaxViT's window-partitioned ``(windows, tokens, C)`` tensors)
  is not spatial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["MAX_EXTRA_TOKENS", "SpatialActivation", "SpatialView", "spatial_view"]

MAX_EXTRA_TOKENS = 8
"""Most leading non-patch tokens (class and register tokens) a token sequence may carry."""

Layout = Literal["chw", "hwc", "tokens"]


@dataclass(frozen=True)
class SpatialView:
    """How to read one layer's output as a ``(C, h, w)`` map per image.

    Attributes:
        layout: ``chw`` (already a map), ``hwc`` (channels last) or ``tokens`` (a sequence).
        channels: ``C`` of the map.
        height: ``h`` of the map.
        width: ``w`` of the map.
        extra_tokens: Leading tokens dropped from a sequence (class and register tokens).
    """

    layout: Layout
    channels: int
    height: int
    width: int
    extra_tokens: int = 0

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)``."""
        return (self.channels, self.height, self.width)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """The ``(N, C, h, w)`` map of a batch of this layer's outputs (a view where possible).

        Raises:
            ValueError: ``output`` does not have the shape this view was worked out for.
        """
        if self.layout == "chw":
            expected: tuple[int, ...] = self.map_shape
        elif self.layout == "hwc":
            expected = (self.height, self.width, self.channels)
        else:
            expected = (self.extra_tokens + self.height * self.width, self.channels)
        if tuple(output.shape[1:]) != expected:
            raise ValueError(
                f"output has shape {list(output.shape[1:])} per image; this {self.layout} view "
                f"reads {list(expected)}"
            )
        if self.layout == "chw":
            return output
        if self.layout == "hwc":
            return output.permute(0, 3, 1, 2)
        patches = output[:, self.extra_tokens :, :]
        return patches.transpose(1, 2).reshape(len(output), *self.map_shape)


def _grid_error(height: int, width: int, input_size: Sequence[int]) -> int:
    """``|h * W - w * H|``: zero when the grid's sides are exactly proportional to the input's."""
    return abs(height * input_size[1] - width * input_size[0])


def _fits_map(height: int, width: int, input_size: Sequence[int]) -> bool:
    # Each side within one cell of H / s and W / s (convolutions round up or down).
    return height >= 1 and width >= 1 and _grid_error(height, width, input_size) <= sum(input_size)


def _token_grid(tokens: int, input_size: Sequence[int]) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of ``tokens`` patch tokens for the input, if one fits exactly."""
    if tokens < 4:
        return None
    best: tuple[int, int] | None = None
    for height in range(1, tokens + 1):
        width, remainder = divmod(tokens, height)
        if remainder:
            continue
        error = _grid_error(height, width, input_size)
        if error < max(input_size) and (best is None or error < _grid_error(*best, input_size)):
            best = (height, width)
    return best


def spatial_view(shape: Sequence[int], input_size: Sequence[int]) -> SpatialView | None:
    """The view that reads outputs of ``shape`` (one image, batch dimension dropped) as a
    ``(C, h, w)`` map, for a model fed ``input_size`` (``(H, W)``) images; ``None`` if none does.

    Raises:
        ValueError: ``input_size`` is not two positive sizes.
    """
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input_size must be (H, W) with positive sides, got {input_size}")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        first, second, third = shape
        if _fits_map(second, third, input_size):
            return SpatialView("chw", first, second, third)
        if _fits_map(first, second, input_size):
            return SpatialView("hwc", third, first, second)
        return None
    if len(shape) == 2:
        tokens, channels = shape
        for extra in range(min(MAX_EXTRA_TOKENS, tokens - 1) + 1):
            grid = _token_grid(tokens - extra, input_size)
            if grid is not None:
                return SpatialView("tokens", channels, *grid, extra_tokens=extra)
    return None


@dataclass(frozen=True)
class SpatialActivation:
    """A layer's output in one call: as captured, and as a ``(N, C, h, w)`` map.

    Attributes:
        captured: The output as the layer returned it (differentiable when captured for gradients).
        view: How it reads as a map.
        maps: ``view(captured)``, detached.
    """

    captured: torch.Tensor
    view: SpatialView
    maps: torch.Tensor

    @classmethod
    def of(cls, captured: torch.Tensor, view: SpatialView) -> SpatialActivation:
        return cls(captured, view, view(captured.detach()))

    def gradient(self, score: torch.Tensor, *, retain_graph: bool = False) -> torch.Tensor:
        """``d score / d maps`` as a ``(N, C, h, w)`` tensor, by ``torch.autograd.grad`` with respect
        to the captured output (the view only re-indexes it, so the view of that gradient is the
        gradient with respect to the map; dropped class tokens simply do not appear)."""
        (grads,) = torch.autograd.grad(score, self.captured, retain_graph=retain_graph)
        return self.view(grads)

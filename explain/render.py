"""Pictures from tensors: colour-mapped heatmaps, overlays, feature-map grids, PNG and base64.

Everything works on tensors or arrays in memory; nothing touches the file system. Colour maps come
from matplotlib's registry, sampled once into a 256-entry lookup table.
"""

from __future__ import annotations

import base64
import functools
import io
import math

import numpy as np
import torch
from PIL import Image

from explain.errors import UnknownNameError

__all__ = [
    "PNG_COMPRESS_LEVEL",
    "UnknownColormapError",
    "apply_colormap",
    "colormap_lut",
    "colormap_names",
    "encode_png",
    "feature_grid",
    "overlay",
    "png_base64",
]

PNG_COMPRESS_LEVEL = 1
"""zlib level for PNGs. Level 1 encodes several times faster than Pillow's default 6 and the files
are barely larger for smooth heatmaps (see docs/benchmarks.md)."""


class UnknownColormapError(UnknownNameError):
    code = "unknown_colormap"
    kind = "colormap"


def colormap_names() -> list[str]:
    """Every colour map name matplotlib knows (``jet``, ``viridis``, ``inferno``, ...)."""
    from matplotlib import colormaps

    return sorted(colormaps)


@functools.lru_cache(maxsize=32)
def colormap_lut(name: str) -> torch.Tensor:
    """A ``(256, 3)`` uint8 lookup table sampled from matplotlib's colour map ``name``.

    Raises:
        UnknownColormapError: matplotlib has no such colour map.
    """
    from matplotlib import colormaps

    if name not in colormaps:
        raise UnknownColormapError(name, colormaps)
    rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
    return torch.from_numpy(np.round(rgba[:, :3] * 255).astype(np.uint8))


def apply_colormap(values: torch.Tensor, colormap: str = "jet") -> torch.Tensor:
    """Colour a ``(H, W)`` map with values in ``[0, 1]`` (clamped): returns ``(H, W, 3)`` uint8."""
    if values.dim() != 2:
        raise ValueError(f"values must be (H, W), got shape {list(values.shape)}")
    index = (values.float().clamp(0, 1) * 255).round().long()
    return colormap_lut(colormap)[index]


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend an ``(H, W, 3)`` uint8 heatmap over an ``(H, W, 3)`` uint8 image with opacity ``alpha``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image.shape != heatmap.shape or image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image and heatmap must both be (H, W, 3); got {list(image.shape)} "
            f"and {list(heatmap.shape)}"
        )
    blended = image.float() * (1.0 - alpha) + heatmap.float() * alpha
    return blended.round_().clamp_(0, 255).to(torch.uint8)


def feature_grid(
    feature_map: torch.Tensor,
    max_channels: int = 64,
    nrow: int | None = None,
    padding: int = 2,
) -> torch.Tensor:
    """Tile the channels of a ``(C, H, W)`` map into one grayscale ``uint8`` image.

    Same picture as ``torchvision.utils.make_grid(channels, nrow, padding, normalize=True,
    scale_each=True)`` converted to 8 bits: each channel is min-max scaled on its own, tiles are
    laid out row by row with ``padding`` black pixels between and around them (a single channel
    is returned without padding, as ``make_grid`` does).

    Args:
        feature_map: ``(C, H, W)`` tensor.
        max_channels: Show at most this many channels (the first ones).
        nrow: Tiles per row; default ``ceil(sqrt(shown))``, a near-square grid.
        padding: Pixels between tiles.
    """
    if feature_map.dim() != 3:
        raise ValueError(f"feature_map must be (C, H, W), got shape {list(feature_map.shape)}")
    if max_channels < 1:
        raise ValueError(f"max_channels must be >= 1, got {max_channels}")
    tiles = feature_map[:max_channels].detach().float()
    count, height, width = tiles.shape
    per_row = min(nrow or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / per_row)

    low = tiles.amin(dim=(1, 2), keepdim=True)
    high = tiles.amax(dim=(1, 2), keepdim=True)
    scaled = (tiles - low) / (high - low).clamp_min(1e-5)
    pixels = scaled.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    if count == 1:  # make_grid returns a lone tile as it is, without padding
        return pixels[0]

    cell_h, cell_w = height + padding, width + padding
    grid = torch.zeros(rows * cell_h + padding, per_row * cell_w + padding, dtype=torch.uint8)
    blank = torch.zeros(rows * per_row - count, height, width, dtype=torch.uint8)
    cells = torch.cat([pixels, blank]).reshape(rows, per_row, height, width)
    view = grid[padding:, padding:].unfold(0, height, cell_h).unfold(1, width, cell_w)
    view[:rows, :per_row] = cells
    return grid


def encode_png(
    pixels: torch.Tensor | np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL
) -> bytes:
    """PNG bytes of an ``(H, W)`` grayscale or ``(H, W, 3)`` RGB uint8 image."""
    array = pixels.numpy(force=True) if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] != 3)
    ):
        raise ValueError(f"expected (H, W) or (H, W, 3) uint8, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def png_base64(pixels: torch.Tensor | np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> str:
    """Base64 (ASCII) of :func:`encode_png`."""
    return base64.b64encode(encode_png(pixels, compress_level)).decode("ascii")

"""Pictures from tensors: colour-mapped heatmaps, overlays, feature-map grids, PNG and base64.

This is the rendering boundary: functions take tensors or arrays and work in NumPy, on the calling
thread (no parallel region competing with a model on other threads), in memory (no files).
Colour maps come from matplotlib's registry, sampled once into a 256-entry lookup table.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
import zlib

import numpy as np
import torch

from explain.errors import UnknownNameError

ArrayLike = torch.Tensor | np.ndarray

__all__ = [
    "PNG_COMPRESS_LEVEL",
    "UnknownColormapError",
    "apply_colormap",
    "colormap_index",
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
def colormap_lut(name: str) -> np.ndarray:
    """A ``(256, 3)`` uint8 lookup table sampled from matplotlib's colour map ``name``.

    Raises:
        UnknownColormapError: matplotlib has no such colour map.
    """
    from matplotlib import colormaps

    if name not in colormaps:
        raise UnknownColormapError(name, colormaps)
    rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
    lut = np.round(rgba[:, :3] * 255).astype(np.uint8)
    lut.flags.writeable = False  # shared by every caller through the cache
    return lut


def colormap_index(values: ArrayLike) -> np.ndarray:
    """A ``(H, W)`` map with values in ``[0, 1]`` (clamped) as ``uint8`` indices into a colour map."""
    array = _array(values, np.float32)
    if array.ndim != 2:
        raise ValueError(f"values must be (H, W), got shape {list(array.shape)}")
    return np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)


def apply_colormap(values: ArrayLike, colormap: str = "jet") -> np.ndarray:
    """Colour a ``(H, W)`` map with values in ``[0, 1]`` (clamped): returns ``(H, W, 3)`` uint8."""
    return np.take(colormap_lut(colormap), colormap_index(values), axis=0)


def overlay(image: ArrayLike, heatmap: ArrayLike, alpha: float = 0.5) -> np.ndarray:
    """Blend an ``(H, W, 3)`` uint8 heatmap over an ``(H, W, 3)`` uint8 image with opacity ``alpha``
    (in integer arithmetic, alpha in steps of 1/256)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base, heat = _array(image), _array(heatmap)
    if base.shape != heat.shape or base.ndim != 3 or base.shape[-1] != 3:
        raise ValueError(
            f"image and heatmap must both be (H, W, 3); got {list(base.shape)} "
            f"and {list(heat.shape)}"
        )
    weight = round(alpha * 256)
    blended = base.astype(np.uint16) * (256 - weight) + heat.astype(np.uint16) * weight + 128
    return (blended >> 8).astype(np.uint8)


def feature_grid(
    feature_map: ArrayLike,
    max_channels: int = 64,
    nrow: int | None = None,
    padding: int = 2,
) -> np.ndarray:
    """Tile the channels of a ``(C, H, W)`` map into one grayscale ``uint8`` image.

    Same picture as ``torchvision.utils.make_grid(channels, nrow, padding, normalize=True,
    scale_each=True)`` converted to 8 bits: each channel is min-max scaled on its own, tiles are
    laid out row by row with ``padding`` black pixels between and around them (a single channel
    is returned without padding, as ``make_grid`` does).

    Args:
        feature_map: ``(C, H, W)`` tensor or array.
        max_channels: Show at most this many channels (the first ones).
        nrow: Tiles per row; default ``ceil(sqrt(shown))``, a near-square grid.
        padding: Pixels between tiles.
    """
    if max_channels < 1:
        raise ValueError(f"max_channels must be >= 1, got {max_channels}")
    tiles = _array(feature_map[:max_channels], np.float32)
    if tiles.ndim != 3:
        raise ValueError(f"feature_map must be (C, H, W), got shape {list(tiles.shape)}")
    count, height, width = tiles.shape
    per_row = min(nrow or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / per_row)

    low = tiles.min(axis=(1, 2), keepdims=True)
    high = tiles.max(axis=(1, 2), keepdims=True)
    scaled = (tiles - low) / np.maximum(high - low, np.float32(1e-5))
    pixels = np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)
    if count == 1:  # make_grid returns a lone tile as it is, without padding
        return pixels[0]

    cells = np.zeros((rows * per_row, height + padding, width + padding), dtype=np.uint8)
    cells[:count, :height, :width] = pixels
    grid = cells.reshape(rows, per_row, height + padding, width + padding).transpose(0, 2, 1, 3)
    grid = grid.reshape(rows * (height + padding), per_row * (width + padding))
    return np.pad(grid, ((padding, 0), (padding, 0)))


def encode_png(
    pixels: ArrayLike,
    compress_level: int = PNG_COMPRESS_LEVEL,
    palette: np.ndarray | None = None,
) -> bytes:
    """PNG bytes of an ``(H, W)`` grayscale or ``(H, W, 3)`` RGB uint8 image.

    With a ``(256, 3)`` ``palette`` (a colour map's lookup table), ``(H, W)`` pixels are indices and
    the PNG is indexed-colour: a third of the data of RGB, so smaller and faster to encode, and
    its pixel values are the heat itself.

    The PNG is written here (NumPy and zlib) rather than by Pillow, whose encoder tries every
    row filter on every row: each row gets PNG's *Sub* filter (the difference to the pixel on
    its left, one vectorised subtraction): the six default feature grids of a photograph come out
    3% larger at 0.36x the time, a 451x300 photograph 11% larger at 0.52x (docs/benchmarks.md,
    ``python -m bench.parts``). Photographs
    and feature grids are deflated with the run-length strategy (``zlib.Z_RLE``): after the
    filter their bytes have few long repeats to find, and skipping the search is faster; smooth
    indexed heatmaps keep zlib's default strategy, which halves their size.
    """
    array = _array(pixels)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] != 3)
        or (palette is not None and array.ndim != 2)
    ):
        raise ValueError(f"expected (H, W) or (H, W, 3) uint8, got {array.dtype} {array.shape}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0 to 9, got {compress_level}")
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else 3
    rows = array.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # PNG filter type 1, Sub
    filtered[:, 1 : 1 + channels] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, 1 + channels :])
    strategy = zlib.Z_DEFAULT_STRATEGY if palette is not None else zlib.Z_RLE
    deflate = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
    compressed = deflate.compress(filtered.data) + deflate.flush()
    colour_type = 3 if palette is not None else 0 if channels == 1 else 2
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if palette is not None:
        table = np.asarray(palette, dtype=np.uint8)
        if table.ndim != 2 or table.shape[1] != 3 or not 1 <= len(table) <= 256:
            raise ValueError(f"palette must be (n <= 256, 3), got shape {list(table.shape)}")
        chunks.append(_png_chunk(b"PLTE", table.tobytes()))
    chunks += [_png_chunk(b"IDAT", compressed), _png_chunk(b"IEND", b"")]
    return b"".join([_PNG_SIGNATURE, *chunks])


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return b"".join(
        [
            struct.pack(">I", len(payload)),
            kind,
            payload,
            struct.pack(">I", zlib.crc32(kind + payload)),
        ]
    )


def png_base64(
    pixels: ArrayLike, compress_level: int = PNG_COMPRESS_LEVEL, palette: np.ndarray | None = None
) -> str:
    """Base64 (ASCII) of :func:`encode_png`."""
    return base64.b64encode(encode_png(pixels, compress_level, palette)).decode("ascii")


def _array(values: ArrayLike, dtype: type | None = None) -> np.ndarray:
    array = values.numpy(force=True) if isinstance(values, torch.Tensor) else np.asarray(values)
    return array if dtype is None else array.astype(dtype, copy=False)

"""Bytes to model input: limits checked from the header, EXIF orientation, every mode to RGB, then
the model's own resize, crop and normalisation. The service and every batch engine read images here."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from explain.errors import (
    ExtremeAspectRatioError,
    ImageTooLargeError,
    InvalidImageError,
)
from explain.models.preprocess import Preprocess

__all__ = ["DecodedImage", "ImageLimits", "PreparedImage", "decode_image", "prepare_image"]

log = logging.getLogger("service.images")


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be: at most ``max_pixels`` (width x height), sides at most
    ``max_aspect_ratio`` apart."""

    max_pixels: int = 64_000_000
    max_aspect_ratio: float = 20.0


@dataclass
class DecodedImage:
    """An RGB image and what the client should know about how it was read."""

    image: Image.Image
    warnings: list[str] = field(default_factory=list)


def decode_image(
    data: bytes, limits: ImageLimits, index: int = 0, min_side: int | None = None
) -> DecodedImage:
    """Decode one image; ``index`` names it in error messages.

    With ``min_side``, a large JPEG is decoded at a reduced scale (JPEG's own DCT scaling) that
    keeps its shorter side at least twice ``min_side``: a 12-megapixel photo decodes many times
    faster, and the model's resize still antialiases from twice its target size.

    Raises:
        InvalidImageError: not an image, truncated, corrupt.
        ImageTooLargeError: over the pixel limit, judged from the header before decoding.
        ExtremeAspectRatioError: sides too far apart.
    """
    where = f"image {index}"
    if not data:
        raise InvalidImageError(f"{where} is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{where}: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(
            f"{where} is not a decodable image (JPEG, PNG, WebP, GIF, ...): {error}"
        ) from None

    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{where} has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{where} is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise ExtremeAspectRatioError(
            f"{where} is {width}x{height}, an aspect ratio of {ratio:.1f}:1; the limit is "
            f"{limits.max_aspect_ratio:g}:1. Crop it closer to the subject.",
        )

    decoded = DecodedImage(image)
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        decoded.warnings.append(f"{where} has {frames} frames; the first one was used")
    if min_side is not None and image.format == "JPEG" and min(width, height) > 4 * min_side:
        factor = 2 * min_side / min(width, height)
        image.draft(None, (math.ceil(width * factor), math.ceil(height * factor)))
    try:
        image.seek(0)
        image.load()
        decoded.image = _to_rgb(_upright(image))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{where}: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"{where} is truncated or corrupt: {error}") from None
    return decoded


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow raises many kinds on malformed EXIF
        log.debug("ignoring unreadable EXIF orientation: %r", error)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, ...


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit and 32-bit integer or float pixels to 8 bits."""
    if mode == "F":
        return np.clip(values, 0, 255).astype(np.uint8)
    wide = values.astype(np.int64)
    if mode == "I" and wide.max(initial=0) <= 255:  # 8-bit data stored wide
        return np.clip(wide, 0, 255).astype(np.uint8)
    return np.clip(wide >> 8, 0, 255).astype(np.uint8)


@dataclass
class PreparedImage:
    """A decoded image ready for a model.

    Attributes:
        tensor: The model's ``(3, H, W)`` input.
        pixels: ``(H, W, 3)`` uint8: the image as the model saw it (resized and cropped).
        warnings: What the caller should know about how it was read.
    """

    tensor: torch.Tensor
    pixels: torch.Tensor
    warnings: list[str]


def prepare_image(
    data: bytes, preprocess: Preprocess, limits: ImageLimits | None = None, index: int = 0
) -> PreparedImage:
    """Decode ``data`` within ``limits`` and apply the model's ``preprocess``.

    Raises:
        InvalidImageError, ImageTooLargeError, ExtremeAspectRatioError: see :func:`decode_image`.
    """
    decoded = decode_image(data, limits or ImageLimits(), index, min_side=preprocess.resize_size)
    pixels = preprocess.crop(decoded.image)
    return PreparedImage(preprocess.normalize(pixels), pixels, decoded.warnings)

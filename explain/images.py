"""Bytes to model input: limits checked from the header, EXIF orientation, every mode to RGB, then
the model's own resize, crop and normalisation. The service and every batch engine read images here."""

from __future__ import annotations

import io
import logging
import math
import re
import sys
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

__all__ = [
    "DecodedImage",
    "ImageLimits",
    "OpenedImage",
    "PreparedImage",
    "decode_bytes",
    "decode_image",
    "load_image",
    "open_image",
    "prepare_image",
    "prepare_opened",
    "storage_bytes",
]

log = logging.getLogger("service.images")


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be: at most ``max_pixels`` (width x height), sides at most
    ``max_aspect_ratio`` apart, and, if ``max_decode_bytes`` is set, at most that much memory to
    decode (see :func:`decode_bytes`)."""

    max_pixels: int = 64_000_000
    max_aspect_ratio: float = 20.0
    max_decode_bytes: int | None = None


@dataclass
class DecodedImage:
    """An RGB image and what the client should know about how it was read."""

    image: Image.Image
    warnings: list[str] = field(default_factory=list)


@dataclass
class OpenedImage:
    """An image whose header has been read and checked, not yet decoded.

    Attributes:
        image: Pillow's lazy image (nothing decoded yet).
        index: Its position in the request, for messages.
        decode_bytes: Memory that decoding it and converting it to RGB may take at its peak.
        warnings: What the caller should know about how it is read.
    """

    image: Image.Image
    index: int
    decode_bytes: int
    warnings: list[str] = field(default_factory=list)


_ORIENTATION = 0x0112
_WIDE_INTEGER = ("I;16", "I;16B", "I;16L", "I;16N")
_TRANSPARENT = ("RGBA", "LA", "PA", "RGBa", "La")


def storage_bytes(mode: str) -> int:
    """Bytes per pixel Pillow keeps in memory for ``mode``: 1 for one 8-bit band, 2 for 16-bit
    integers, 4 for 32-bit values and for every multi-band mode (RGB included)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode in _WIDE_INTEGER:
        return 2
    return 4


def decode_bytes(width: int, height: int, mode: str, rotated: bool = False) -> int:
    """Peak memory to decode a ``width`` x ``height`` image of ``mode`` and make it RGB: the
    decoded pixels, an upright copy if EXIF asks for a rotation, and the conversion's buffers
    (16-bit data goes through a NumPy copy and an 8-bit image; transparency through an RGBA
    image and a white background)."""
    stored = storage_bytes(mode)
    if mode == "RGB":
        conversion = 0
    elif mode in _WIDE_INTEGER:
        conversion = 2 + 1 + 1 + 4
    elif mode in ("I", "F"):
        conversion = 4 + 1 + 1 + 4
    elif mode in _TRANSPARENT or mode == "P":
        conversion = 4 + 4 + 4
    else:
        conversion = 4
    return width * height * (stored + (stored if rotated else 0) + conversion)


def open_image(
    data: bytes, limits: ImageLimits, index: int = 0, min_side: int | None = None
) -> OpenedImage:
    """Read one image's header and check it against ``limits``; nothing is decoded.

    With ``min_side``, a large JPEG is set to decode at a reduced scale (JPEG's own DCT scaling)
    that keeps its shorter side at least twice ``min_side``: a 12-megapixel photo decodes many
    times faster, and the model's resize still antialiases from twice its target size.

    Raises:
        InvalidImageError: not an image.
        ImageTooLargeError: over the pixel limit or the decoding-memory limit.
        ExtremeAspectRatioError: sides too far apart.
    """
    where = f"image {index}"
    if not data:
        raise InvalidImageError(f"{where} is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{where}: {error}") from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{where} is not a decodable image: its format is none that Pillow reads "
            "(JPEG, PNG, WebP, GIF, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(
            f"{where} is not a decodable image (JPEG, PNG, WebP, GIF, ...): {_plain(error)}"
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

    warnings = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        warnings.append(f"{where} has {frames} frames; the first one was used")
    if min_side is not None and image.format == "JPEG" and min(width, height) > 4 * min_side:
        factor = 2 * min_side / min(width, height)
        image.draft(None, (math.ceil(width * factor), math.ceil(height * factor)))
    cost = decode_bytes(*image.size, image.mode, _may_rotate(image))
    if limits.max_decode_bytes is not None and cost > limits.max_decode_bytes:
        raise ImageTooLargeError(
            f"{where} is {width}x{height} in mode {image.mode}: decoding it takes about "
            f"{cost // 2**20} MiB, more than the {limits.max_decode_bytes // 2**20} MiB an image "
            "may use; send it smaller or as 8-bit RGB"
        )
    return OpenedImage(image, index, cost, warnings)


def _may_rotate(image: Image.Image) -> bool:
    """Whether EXIF may ask for a rotation, from the header alone: ``getexif()`` would decode a
    PNG whole to look for an eXIf chunk after the pixels, so a PNG without one before them counts
    as rotated (an upper bound on its cost)."""
    raw = image.info.get("exif")
    if raw is None:
        return image.format == "PNG"
    try:
        exif = Image.Exif()
        exif.load(raw if isinstance(raw, bytes) else bytes(raw))
        return exif.get(_ORIENTATION, 1) not in (1, None)
    except Exception:  # Pillow raises many kinds on malformed EXIF; then it is not applied
        return False


def load_image(opened: OpenedImage) -> DecodedImage:
    """Decode an opened image, upright and in RGB.

    Raises:
        InvalidImageError: truncated or corrupt.
        ImageTooLargeError: a decompression bomb found while decoding.
    """
    image = opened.image
    try:
        image.seek(0)
        image.load()
        upright = _upright(image)
        if upright is not image:
            image.close()
        return DecodedImage(_to_rgb(upright), list(opened.warnings))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image {opened.index}: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(
            f"image {opened.index} is truncated or corrupt: {_plain(error)}"
        ) from None


def decode_image(
    data: bytes, limits: ImageLimits, index: int = 0, min_side: int | None = None
) -> DecodedImage:
    """Decode one image; ``index`` names it in error messages. See :func:`open_image` for
    ``min_side``.

    Raises:
        InvalidImageError: not an image, truncated, corrupt.
        ImageTooLargeError: over the pixel or memory limit, judged from the header before decoding.
        ExtremeAspectRatioError: sides too far apart.
    """
    return load_image(open_image(data, limits, index, min_side))


def _plain(error: BaseException) -> str:
    """An error's message without the reprs of in-memory files Pillow puts in some of them."""
    return _OBJECT_REPR.sub("the data", str(error))[:200]


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored. An
    image without a rotation is returned as it is (Pillow would copy it)."""
    try:
        if image.getexif().get(_ORIENTATION, 1) in (1, None):
            return image
        return ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow raises many kinds on malformed EXIF
        log.debug("ignoring unreadable EXIF orientation: %r", error)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white. Wide buffers are
    released as soon as the next one exists, so the peak stays as :func:`decode_bytes` says."""
    if image.mode == "RGB":
        return image
    if image.mode in (*_WIDE_INTEGER, "I", "F"):
        gray = Image.fromarray(_to_uint8(image))  # closes ``image`` as soon as it can
        return gray.convert("RGB")
    if image.mode == "P":
        converted = image.convert("RGBA" if "transparency" in image.info else "RGB")
        image.close()
        image = converted
    if image.mode in _TRANSPARENT:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        rgba.close()
        return background.convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, ...


def _to_uint8(image: Image.Image) -> np.ndarray:
    """16-bit and 32-bit integer or float pixels to 8 bits; ``image`` is closed once its pixels
    are copied out. 16-bit pixels keep their high byte, read straight from the raw bytes."""
    if image.mode in _WIDE_INTEGER:
        width, height = image.size
        big_endian = image.mode == "I;16B" or (image.mode == "I;16N" and sys.byteorder == "big")
        raw = image.tobytes()
        image.close()
        high = np.frombuffer(raw, dtype=np.uint8)[0 if big_endian else 1 :: 2]
        return np.ascontiguousarray(high).reshape(height, width)
    values = np.array(image)
    image.close()
    if image.mode == "F":
        np.nan_to_num(values, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(values, 0, 255, out=values).astype(np.uint8)
    if image.mode == "I" and values.max(initial=0) <= 255:  # 8-bit data stored wide
        return np.clip(values, 0, 255, out=values).astype(np.uint8)
    np.clip(values, 0, None, out=values)
    np.right_shift(values, 8, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)


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
    limits = limits or ImageLimits()
    return prepare_opened(
        open_image(data, limits, index, min_side=preprocess.resize_size), preprocess
    )


def prepare_opened(opened: OpenedImage, preprocess: Preprocess) -> PreparedImage:
    """Decode an image opened with ``min_side=preprocess.resize_size`` and preprocess it.

    Raises:
        InvalidImageError, ImageTooLargeError: see :func:`load_image`.
    """
    decoded = load_image(opened)
    pixels = preprocess.crop(decoded.image)
    decoded.image.close()
    return PreparedImage(preprocess.normalize(pixels), pixels, decoded.warnings)

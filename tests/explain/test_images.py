"""Decoding: every mode to RGB, orientation, limits from the header."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explain.errors import ExtremeAspectRatioError, ImageTooLargeError
from explain.images import ImageLimits, decode_image

LIMITS = ImageLimits(max_pixels=1_000_000, max_aspect_ratio=20)


def encode(image: Image.Image, format: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def test_16_bit_grayscale_keeps_its_brightness():
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    decoded = decode_image(encode(Image.fromarray(ramp)), LIMITS).image
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded)[..., 0], (ramp >> 8).astype(np.uint8))


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    pixels = np.asarray(decode_image(encode(rgba), LIMITS).image)
    assert pixels[0, 0].tolist() == [0, 0, 255] and pixels[1, 1].tolist() == [255, 255, 255]
    palette = rgba.convert("P")
    palette.info["transparency"] = palette.getpixel((1, 1))
    decoded = np.asarray(
        decode_image(encode(palette, transparency=palette.getpixel((1, 1))), LIMITS).image
    )
    assert decoded[1, 1].tolist() == [255, 255, 255]


def test_cmyk_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red ink
    red = np.asarray(decode_image(encode(cmyk, "JPEG", quality=100), LIMITS).image)
    assert red[..., 0].min() > 200 and red[..., 1:].max() < 60


def test_exif_orientation_turns_the_image_upright():
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.new("RGB", (40, 20))
    assert decode_image(encode(stored, "JPEG", exif=exif), LIMITS).image.size == (20, 40)


def test_pixel_limit_is_checked_before_decoding():
    big = encode(Image.new("1", (1001, 1000)))
    with pytest.raises(ImageTooLargeError, match="image 3 is 1001x1000") as info:
        decode_image(big, LIMITS, index=3)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize(
    ("size", "accepted"),
    [((400, 20), True), ((401, 20), False), ((20, 401), False), ((1, 1), True)],
)
def test_aspect_ratio_limit(size, accepted):
    data = encode(Image.new("RGB", size))
    if accepted:
        assert decode_image(data, LIMITS).image.size == size
    else:
        with pytest.raises(ExtremeAspectRatioError, match="aspect ratio"):
            decode_image(data, LIMITS)


def test_large_jpegs_are_decoded_at_a_reduced_scale_with_the_same_picture():
    from explain.models import load_model
    from tests.conftest import photo

    preprocess = load_model("alexnet:none").preprocess
    large = photo("chelsea").resize((451 * 8, 300 * 8), Image.Resampling.BICUBIC)
    data = encode(large, "JPEG", quality=95)
    limits = ImageLimits(max_pixels=64_000_000, max_aspect_ratio=20)
    full = decode_image(data, limits).image
    reduced = decode_image(data, limits, min_side=preprocess.resize_size).image
    assert full.size == (3608, 2400)
    assert 2 * 256 <= min(reduced.size) < 4 * 256  # 1/4 scale: 902 x 600
    difference = np.abs(
        preprocess.crop(full).numpy().astype(int) - preprocess.crop(reduced).numpy().astype(int)
    )
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4

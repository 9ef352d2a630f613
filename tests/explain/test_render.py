from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from torchvision.utils import make_grid

from explain.render import (
    UnknownColormapError,
    apply_colormap,
    colormap_lut,
    encode_png,
    feature_grid,
    overlay,
    png_base64,
)


def make_grid_uint8(feature_map: torch.Tensor, nrow: int) -> torch.Tensor:
    """torchvision's grid of the channels, converted to 8 bits as ``save_image`` does."""
    grid = make_grid(feature_map[:, None], nrow=nrow, normalize=True, scale_each=True, padding=2)
    return grid[0].mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


@pytest.mark.parametrize(("channels", "nrow"), [(64, None), (7, None), (5, 2), (1, None), (96, 16)])
def test_feature_grid_matches_make_grid(channels, nrow):
    torch.manual_seed(channels)
    feature_map = torch.randn(channels, 13, 9) * 5
    feature_map[0] = 3.0  # a constant channel: make_grid divides by 1e-5, not zero
    grid = feature_grid(feature_map, max_channels=128, nrow=nrow)
    per_row = nrow or int(np.ceil(np.sqrt(channels)))
    assert np.array_equal(grid, make_grid_uint8(feature_map, per_row))


def test_feature_grid_limits_channels_and_is_near_square():
    feature_map = torch.randn(256, 6, 6)
    grid = feature_grid(feature_map, max_channels=64)
    assert grid.shape == (8 * 8 + 2, 8 * 8 + 2)  # 8 x 8 tiles of 6 px, 2 px padding
    assert np.array_equal(grid, make_grid_uint8(feature_map[:64], 8))


def test_colormap_lut_samples_matplotlib():
    lut = colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable
    expected = np.round(colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255)
    assert np.array_equal(lut, expected.astype(np.uint8))
    jet = apply_colormap(torch.tensor([[0.0, 1.0], [0.5, 2.0]]), "jet")
    assert jet[0, 0].tolist() == colormap_lut("jet")[0].tolist()
    assert jet[1, 1].tolist() == jet[0, 1].tolist() == colormap_lut("jet")[255].tolist()
    with pytest.raises(UnknownColormapError, match="unknown colormap 'jett'; did you mean: jet"):
        colormap_lut("jett")


def test_overlay_blends_with_opacity():
    image = torch.full((4, 4, 3), 200, dtype=torch.uint8)
    heat = torch.zeros((4, 4, 3), dtype=torch.uint8)
    assert np.unique(overlay(image, heat, 0.25)).tolist() == [150]
    assert np.array_equal(overlay(image, heat, 0.0), image)
    assert np.array_equal(overlay(image, heat, 1.0), heat)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, 1.5)
    with pytest.raises(ValueError, match="both be"):
        overlay(image, heat[:2], 0.5)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_png_round_trips_through_base64(shape):
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8)
    decoded = Image.open(io.BytesIO(base64.b64decode(png_base64(pixels))))
    assert decoded.format == "PNG"
    assert np.array_equal(np.asarray(decoded), pixels.numpy())
    assert encode_png(pixels.numpy()) == encode_png(pixels)


def test_png_refuses_other_dtypes():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(torch.zeros(4, 4))


def test_indexed_png_keeps_the_heat_as_pixel_values():
    from explain.render import colormap_index

    heat = torch.linspace(0, 1, 64 * 32).reshape(64, 32)
    index = colormap_index(heat)
    assert index.dtype == np.uint8 and index.min() == 0 and index.max() == 255
    decoded = Image.open(io.BytesIO(encode_png(index, palette=colormap_lut("inferno"))))
    assert decoded.mode == "P"
    assert np.array_equal(np.asarray(decoded), index)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), apply_colormap(heat, "inferno"))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.uint8), palette=colormap_lut("jet"))

"""A model's own preprocessing: resize, centre crop, scale, normalise."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = ["Preprocess"]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize_size``, centre-crop ``crop_size``, normalise.

    Attributes:
        resize_size: Length of the shorter side after resizing.
        crop_size: Side of the square centre crop (the model's input size).
        mean: Per-channel mean, for pixel values scaled to ``[0, 1]``.
        std: Per-channel standard deviation, same scale.
        interpolation: ``"bilinear"`` or ``"bicubic"`` (antialiased, as torchvision does).
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}"
            )
        if not 0 < self.crop_size <= self.resize_size:
            raise ValueError("need 0 < crop_size <= resize_size")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the tensors this produces."""
        return (self.crop_size, self.crop_size)

    def crop(self, image: Image.Image) -> torch.Tensor:
        """The RGB image as the model sees it: ``(crop, crop, 3)`` uint8, resized and cropped.

        The same picture as torchvision's ``Resize(resize_size, antialias=True)`` then
        ``CenterCrop(crop_size)`` (within one grey level, from rounding), computed by resampling
        only the region that the crop keeps.
        """
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        width, height = rgb.size
        if width <= height:
            new_width, new_height = self.resize_size, int(self.resize_size * height / width)
        else:
            new_width, new_height = int(self.resize_size * width / height), self.resize_size
        top = round((new_height - self.crop_size) / 2.0)
        left = round((new_width - self.crop_size) / 2.0)
        scale_x, scale_y = width / new_width, height / new_height
        box = (
            left * scale_x,
            top * scale_y,
            (left + self.crop_size) * scale_x,
            (top + self.crop_size) * scale_y,
        )
        size = (self.crop_size, self.crop_size)
        cropped = rgb.resize(size, _RESAMPLE[self.interpolation], box=box)
        return torch.from_numpy(np.array(cropped, dtype=np.uint8))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(..., H, W, 3)`` uint8 pixels to the model's ``(..., 3, H, W)`` float input.

        Computed with NumPy: the elementwise work stays on the calling thread instead of
        starting a parallel region that would compete with a model running on other threads.
        """
        scale, offset = self._affine
        values = np.asarray(pixels, dtype=np.float32) * scale - offset
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(values, -1, -3)))

    @functools.cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x / 255 - mean) / std`` as ``x * scale - offset``, per channel."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return 1 / (255 * std), mean / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image to a ``(3, crop, crop)`` input tensor."""
        return self.normalize(self.crop(image))

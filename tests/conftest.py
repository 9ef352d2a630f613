"""Fixtures shared by every test package: small models, real photos, a running service and a
local Ray cluster."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


RAY_MARKER = "EXPLAIN_TEST_RAY_CLUSTER"
"""An environment variable that every process of a test's Ray cluster inherits (its GCS server and
raylet from the driver that starts it, the workers from the raylet), so the test can find them."""


def ray_processes(marker: str) -> list:
    """The live processes whose environment has ``RAY_MARKER=marker``."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(RAY_MARKER) == marker and process.status() != "zombie":
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def assert_no_ray_process_left(marker: str, timeout: float = 30.0) -> None:
    """Every process of the cluster marked ``marker`` ends within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while left := ray_processes(marker):
        if time.monotonic() > deadline:
            raise AssertionError(f"Ray processes left behind: {[p.name() for p in left]}")
        time.sleep(0.2)


@dataclass(frozen=True)
class RayCluster:
    """The session's local Ray cluster: this process is its driver."""

    address: str
    marker: str


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A local Ray cluster (2 CPUs, no dashboard) shared by every Ray test, this process its
    driver; stopped at the end of the session, and none of its processes may remain. A test
    may start Serve on it, and must shut Serve down itself."""
    import ray

    marker = uuid.uuid4().hex
    temp_dir = f"/tmp/ray-tests-{marker[:8]}"  # short: Ray's socket paths must fit in 107 bytes
    os.environ[RAY_MARKER] = marker  # for the processes that ray.init starts, only
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level="WARNING",
            _temp_dir=temp_dir,
        )
    finally:
        del os.environ[RAY_MARKER]
    try:
        yield RayCluster(ray.get_runtime_context().gcs_address, marker)
    finally:
        ray.shutdown()
        assert_no_ray_process_left(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)

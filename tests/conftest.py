"""Fixtures shared by every test package: small models and real photos."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from torch import nn


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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    """``python -m service`` running on loopback; ``output`` is what it printed, once stopped."""

    process: subprocess.Popen[str]
    base_url: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@contextmanager
def service_process(timeout: float = 180.0, **env: str) -> Iterator[ServiceProcess]:
    """Start ``python -m service`` on a free port with ``env`` added to the environment, wait until
    ``/readyz`` answers 200, and stop it with SIGTERM on the way out."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        text=True,
    )
    running = ServiceProcess(process, f"http://127.0.0.1:{port}")
    # Read what it prints as it goes: a full pipe would block the server.
    reader = threading.Thread(target=running.lines.extend, args=(process.stdout,), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert process.poll() is None, running.output
            try:
                if httpx.get(f"{running.base_url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(10)
        process.stdout.close()


@pytest.fixture(scope="session")
def service_url() -> Iterator[str]:
    """``python -m service`` (efficientnet_lite0, default settings) on a free loopback port,
    shared by the tests that need a real server, and stopped at the end of the session."""
    with service_process(
        EXPLAIN_MODELS="efficientnet_lite0", EXPLAIN_LOG_LEVEL="warning"
    ) as server:
        yield server.base_url

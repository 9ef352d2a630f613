"""An app with its lifespan running, reached through httpx, shared by the service tests."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from PIL import Image

from service import Settings, create_app
from tests.conftest import photo

TEST_MODELS = ["efficientnet_lite0", "alexnet:none", "resnet18:none"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


async def wait_ready(client: httpx.AsyncClient, timeout: float = 120.0) -> None:
    import anyio

    with anyio.fail_after(timeout):
        while (await client.get("/readyz")).status_code != 200:
            await anyio.sleep(0.05)


@asynccontextmanager
async def running_client(app: FastAPI, *, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for ``app`` with its lifespan running (and its models loaded, if ``ready``)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
        httpx.AsyncClient(transport=transport, base_url="http://service", timeout=120) as client,
    ):
        if ready:
            await wait_ready(client)
        yield client


@pytest.fixture(scope="session")
def app() -> FastAPI:
    return create_app(Settings(models=TEST_MODELS, max_batch_wait_ms=5))


@pytest.fixture(scope="session")
async def client(app: FastAPI, anyio_backend) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(app) as client:
        yield client


def image_bytes(name: str = "chelsea", format: str = "JPEG", **save) -> bytes:
    buffer = io.BytesIO()
    image = photo(name)
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_array(text: str) -> np.ndarray:
    """A base64 PNG's pixels; indexed-colour PNGs are turned into RGB."""
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB") if image.mode == "P" else image)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return body["error"]


async def eventually(condition, timeout: float = 30.0) -> None:
    """Wait (on the event loop) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def blocked(worker) -> tuple[threading.Event, threading.Event]:
    """Make ``worker``'s batches wait for ``gate``; ``started`` is set when the first one runs."""
    gate, started = threading.Event(), threading.Event()
    real_run = worker._run

    def run(task, inputs, targets):
        started.set()
        gate.wait(30)
        return real_run(task, inputs, targets)

    worker._run = run
    return gate, started

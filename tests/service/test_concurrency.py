"""Many simultaneous mixed requests answer what they answer one at a time, and really batch."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from service import Settings, create_app
from tests.service.conftest import TEST_MODELS, image_bytes, png_array, running_client

pytestmark = pytest.mark.anyio

PHOTOS = ["chelsea", "coffee", "rocket", "astronaut"]


def requests() -> list[tuple[str, dict, bytes]]:
    mixed = []
    for name in PHOTOS:
        data = image_bytes(name)
        mixed += [
            ("/predict", {"top_k": 3}, data),
            ("/gradcam", {"return_cam": "true"}, data),
            ("/gradcam", {"method": "layercam", "target": 281, "return_cam": "true"}, data),
            ("/featuremaps", {"layers": "_blocks.4,_head_act", "max_channels": 16}, data),
            ("/gradcam", {"model": "resnet18", "return_cam": "true"}, data),
            ("/predict", {"model": "alexnet"}, data),
        ]
    return mixed


def assert_same_answer(batched, alone) -> None:
    """Equal up to float noise: a batched convolution may differ from a lone one in the last bits
    (~1e-6 here), so a score may move in its 6th decimal and a few heatmap pixels by one step of the
    colour map (up to ~4 levels for jet). Cross-talk between requests would change classes, maps
    and images wholesale."""
    if isinstance(alone, dict):
        assert batched.keys() == alone.keys()
        for key in alone:
            assert_same_answer(batched[key], alone[key])
    elif isinstance(alone, list):
        assert len(batched) == len(alone)
        for b, a in zip(batched, alone, strict=True):
            assert_same_answer(b, a)
    elif isinstance(alone, float):
        assert batched == pytest.approx(alone, abs=1e-4)
    elif isinstance(alone, str) and len(alone) > 200:  # a base64 PNG
        difference = np.abs(png_array(batched).astype(int) - png_array(alone).astype(int))
        assert difference.max() <= 8 and (difference > 0).mean() < 0.005
    else:
        assert batched == alone


@pytest.fixture(params=["one batch at a time", "two batches at once"])
async def any_client(request, client):
    """The shared app, and one whose model runs two single-threaded batches side by side."""
    if request.param == "one batch at a time":
        yield client
        return
    app = create_app(Settings(models=TEST_MODELS, batch_threads=2, torch_threads=1))
    async with running_client(app) as two:
        yield two


async def test_simultaneous_mixed_requests_match_sequential_ones(any_client):
    client = any_client
    mixed = requests()

    async def send(path: str, params: dict, data: bytes) -> list:
        response = await client.post(
            path, params=params, content=data, headers={"content-type": "image/jpeg"}
        )
        assert response.status_code == 200, response.text
        return response.json()["results"]

    alone = [await send(*request) for request in mixed]
    before = await batches_with_several_requests(client)
    together = await asyncio.gather(*(send(*request) for request in mixed * 2))
    for i, results in enumerate(together):
        assert_same_answer(results, alone[i % len(mixed)])
    assert await batches_with_several_requests(client) > before, "no batch gathered two requests"


async def batches_with_several_requests(client) -> float:
    """Batches that gathered more than one request, from /metrics."""
    text = (await client.get("/metrics")).text
    counts = re.findall(r"explain_batch_requests_count\{[^}]*\} (\S+)", text)
    singles = re.findall(r'explain_batch_requests_bucket\{[^}]*le="1.0"[^}]*\} (\S+)', text)
    return sum(map(float, counts)) - sum(map(float, singles))

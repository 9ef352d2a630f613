"""What one request may cost: caps on its options, malformed JSON, quoted input, a queue that admits
by cost with an honest Retry-After, and the whole-request deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from service import Settings, create_app
from tests.service.conftest import (
    assert_error,
    b64,
    blocked,
    eventually,
    image_bytes,
    running_client,
)

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


def body(**options) -> dict:
    return {"images": [b64(image_bytes())], **options}


# -- caps on targets, layers and channels -----------------------------------------------------------


async def test_ten_thousand_targets_are_refused_at_once(client):
    """The 96 KB body that bought 62 s, a 1.2 GB answer and 8 GB of memory."""
    started = time.monotonic()
    response = await client.post("/gradcam", json=body(target=[i % 1000 for i in range(10_000)]))
    assert time.monotonic() - started < 2.0
    error = assert_error(response, 413, "too_many_targets")
    assert "10000 targets" in error["message"] and "16" in error["message"]


async def test_sixteen_targets_are_explained(client):
    response = await client.post("/gradcam", json=body(target=list(range(281, 297))))
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["explanations"]) == 16


async def test_too_many_distinct_layers_are_refused_and_repeats_folded(client):
    layers = [
        layer["name"]
        for layer in (await client.get("/models/efficientnet_lite0")).json()["layers"]
        if layer["spatial"]
    ]
    refused = await client.post("/featuremaps", json=body(layers=layers[:17] * 100))
    assert_error(refused, 413, "too_many_layers")
    repeated = await client.post("/featuremaps", json=body(layers=layers[:2] * 1500))
    assert repeated.status_code == 200, repeated.text
    assert [m["layer"] for m in repeated.json()["results"][0]["featuremaps"]] == layers[:2]
    assert len(repeated.content) < 1_000_000


@pytest.mark.parametrize("channels", [257, 4096])
async def test_max_channels_beyond_the_limit_is_refused(client, channels):
    response = await client.post(f"/featuremaps?max_channels={channels}", json=body())
    assert_error(response, 422, "invalid_option")


# -- JSON ---------------------------------------------------------------------------------------------


MALFORMED = {
    "nested 100,000 deep": '{"images": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "an integer of 5,000 digits": '{"images": ["AAAA"], "top_k": ' + "7" * 5000 + "}",
    "not UTF-8": b'{"images": ["\xff\xfe"]}',
    "UTF-16": '{"images": []}'.encode("utf-16"),
    "NaN": '{"images": ["AAAA"], "alpha": NaN}',
    "Infinity": '{"images": ["AAAA"], "alpha": -Infinity}',
    "truncated": '{"images": [',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_every_malformed_json_is_400_invalid_json(client, case):
    content = MALFORMED[case]
    content = content.encode() if isinstance(content, str) else content
    response = await client.post("/gradcam", content=content, headers=JSON)
    error = assert_error(response, 400, "invalid_json")
    assert len(error["message"]) < 300


@pytest.mark.parametrize(
    "options",
    [{"top_k": True}, {"top_k": "5"}, {"top_k": 2.5}, {"target": [True]}, {"return_cam": 1}],
    ids=["top_k true", "top_k string", "top_k fraction", "target true", "return_cam 1"],
)
async def test_json_options_have_strict_types(client, options):
    response = await client.post("/gradcam", json=body(**options))
    assert_error(response, 422, "invalid_option")


async def test_an_integral_json_number_is_an_integer(client):
    response = await client.post("/gradcam", json=body(top_k=2.0, target=[285.0], alpha=1))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["explanations"][0]["index"] == 285


@pytest.mark.parametrize(
    "options",
    [{"model": "m" * 1_000_000}, {"target": ["t" * 1_000_000]}, {"k" * 1_000_000: 1}],
    ids=["model", "target label", "option name"],
)
async def test_messages_quote_at_most_200_characters_of_input(client, options):
    response = await client.post("/gradcam", json=body(**options))
    assert response.status_code in (404, 422)
    assert len(response.json()["error"]["message"]) < 400


async def test_a_multipart_field_name_is_quoted_short(client):
    response = await client.post(
        "/predict", files={"image": ("a.jpg", image_bytes(), "image/jpeg"), "f" * 1_000: "x"}
    )
    error = assert_error(response, 422, "unexpected_field")
    assert len(error["message"]) < 400


async def test_an_undecodable_image_message_shows_no_python_object(client):
    response = await client.post(
        "/predict", content=b"not an image", headers={"content-type": "image/png"}
    )
    error = assert_error(response, 400, "invalid_image")
    assert "BytesIO" not in error["message"] and "0x" not in error["message"]


# -- the queue admits by cost --------------------------------------------------------------------------


async def test_the_queue_counts_score_cam_by_its_forward_passes_and_says_how_long():
    """One Score-CAM image costs 1 + 40 forward passes: behind a running one, a second fills a
    queue of 60, and the third is refused with a Retry-After worked out from the queued and
    running work at the measured rate (here set to 10 forward passes a second): 82 / 10 s."""
    settings = Settings(
        models=["alexnet:none"],
        queue_size=60,
        batch_threads=1,
        scorecam_max_channels=40,
        retry_after_seconds=1,
    )
    app = create_app(settings)
    async with running_client(app) as client:
        worker = app.state.service.models["alexnet"].worker
        gate, started = blocked(worker)
        worker._rate = 10.0
        worker.measured = lambda cost, seconds: None  # keep the rate fixed for the assertion
        post = lambda: client.post("/gradcam", json=body(method="scorecam"))  # noqa: E731
        running = asyncio.ensure_future(post())
        await eventually(started.is_set)
        queued = asyncio.ensure_future(post())
        await eventually(lambda: worker.waiting_cost == 41)
        refused = await post()
        assert_error(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "9"
        cheap = asyncio.ensure_future(  # one forward pass still fits where 41 did not
            client.post("/predict", content=image_bytes(), headers={"content-type": "image/jpeg"})
        )
        await eventually(lambda: worker.waiting_cost == 42)
        gate.set()
        assert [(await r).status_code for r in (running, queued, cheap)] == [200, 200, 200]


async def test_a_request_past_its_deadline_is_504_and_its_queued_work_dropped():
    app = create_app(Settings(models=["alexnet:none"], batch_threads=1, request_timeout_s=1.0))
    async with running_client(app) as client:
        worker = app.state.service.models["alexnet"].worker
        gate, started = blocked(worker)
        first = asyncio.ensure_future(
            client.post("/predict", content=image_bytes(), headers={"content-type": "image/jpeg"})
        )
        await eventually(started.is_set)
        began = time.monotonic()
        late = await client.post("/predict", json={"images": [b64(image_bytes())] * 4})
        assert time.monotonic() - began < 2.5
        assert_error(late, 504, "deadline_exceeded")
        assert worker.waiting_cost == 0 and worker.waiting_images == 0  # nothing left queued
        gate.set()
        assert_error(await first, 504, "deadline_exceeded")


async def test_the_first_retry_after_pace_leaves_out_building_the_graphs(monkeypatch):
    """The rate Retry-After starts from is the warm-up's pace; seconds spent exporting and checking
    the optimised graphs before it are no part of how fast the model runs."""
    from explain.tasks import TaskRunner

    build, built = TaskRunner.build_graphs, set()

    def slow_build(self: TaskRunner) -> None:  # as slow as a big model's, the first time
        if id(self) not in built:
            time.sleep(5)
            built.add(id(self))
        build(self)

    monkeypatch.setattr(TaskRunner, "build_graphs", slow_build)
    app = create_app(Settings(models=["alexnet:none"]))
    async with running_client(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        worker = app.state.service.models["alexnet"].worker
        assert worker.rate > 6 / 5  # the 6 warm-up passes took less than the 5 s of building

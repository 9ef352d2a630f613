"""The client against the real service (a subprocess) and a scripted server in front of it."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from explain_client import ApiError, AsyncClient, Client, Result, UnreachableError
from tests.conftest import photo
from tests.realserver import free_port


def jpeg(name: str = "chelsea") -> bytes:
    buffer = io.BytesIO()
    photo(name).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_one_image_in_any_form_gives_a_typed_result(service_url, tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(jpeg())
    with Client(service_url) as client:
        by_path = client.predict(path, top_k=3)
        assert isinstance(by_path, Result) and by_path.model == "efficientnet_lite0"
        assert len(by_path.top_k) == 3 and by_path.top_k[0].label
        for same in (str(path), jpeg(), photo("chelsea"), np.asarray(photo("chelsea"))):
            assert client.predict(same, top_k=3).top_k[0].index == by_path.top_k[0].index


def test_gradcam_and_featuremaps_decode_their_pngs(service_url):
    with Client(service_url) as client:
        result = client.gradcam(jpeg(), target=["tabby", 285], return_cam=True)
        assert [e.index for e in result.explanations] == [281, 285]
        explanation = result.explanations[0]
        assert explanation.overlay.size == (224, 224) and explanation.overlay.mode == "RGB"
        assert explanation.heatmap.mode == "P"
        assert explanation.cam.shape == (7, 7) and explanation.cam.max() == pytest.approx(1.0)
        maps = client.featuremaps(jpeg(), layers=["_blocks.2", "_head_act"], max_channels=16)
        assert [m.layer for m in maps.featuremaps] == ["_blocks.2", "_head_act"]
        assert maps.featuremaps[1].image.mode == "L" and maps.featuremaps[1].channels_shown == 16


def test_guided_maps_and_faithfulness_scores_are_typed(service_url):
    with Client(service_url) as client:
        (explanation,) = client.gradcam(
            jpeg(), method="guided_backprop", return_cam=True, faithfulness=True
        ).explanations
    assert explanation.layer is None and explanation.cam.shape == (224, 224)
    assert set(explanation.faithfulness) == {"confidence_change", "deletion_auc", "insertion_auc"}
    assert 0.0 <= explanation.faithfulness["deletion_auc"] <= 1.0


def test_a_list_in_gives_a_list_out_in_order(service_url):
    images = [jpeg(name) for name in ("chelsea", "coffee", "rocket", "astronaut")]
    with Client(service_url) as client:
        one_by_one = [client.predict(image).top_k[0].index for image in images]
        together = client.predict(images)
    assert [r.top_k[0].index for r in together] == one_by_one


def test_retries_503_after_retry_after(scripted):
    url, script = scripted
    script.actions.extend(["503", "503"])
    started = time.monotonic()
    with Client(url, backoff=0.01) as client:
        result = client.predict(jpeg(), top_k=1)
    assert time.monotonic() - started >= 2.0  # Retry-After: 1, twice
    assert [seen["action"] for seen in script.seen] == ["503", "503", "forward"]
    assert result.top_k[0].index == 282  # tiger cat


def test_gives_up_on_503_after_its_retries(scripted):
    url, script = scripted
    script.actions.extend(["503"] * 3)
    with Client(url, max_retries=2) as client, pytest.raises(ApiError) as caught:
        client.predict(jpeg())
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        503,
        "overloaded",
        1.0,
    )
    assert len(script.seen) == 3


def test_retries_a_dropped_connection(scripted):
    url, script = scripted
    script.actions.extend(["drop", "drop"])
    with Client(url, backoff=0.01) as client:
        assert client.predict(jpeg(), top_k=1).top_k[0].index == 282  # tiger cat
    assert [seen["action"] for seen in script.seen] == ["drop", "drop", "forward"]


def test_nothing_listening_is_unreachable_after_bounded_retries():
    started = time.monotonic()
    with Client(f"http://127.0.0.1:{free_port()}", max_retries=3, backoff=0.01) as client:
        with pytest.raises(UnreachableError, match="after 4 tries") as caught:
            client.predict(jpeg())
        assert caught.value.code == "unreachable"
        with pytest.raises(UnreachableError):
            client.ready()
    assert time.monotonic() - started < 10


def test_sends_the_api_key(scripted):
    url, script = scripted
    with Client(url, api_key="s3cret") as client:
        client.predict(jpeg())
    assert script.seen[0]["headers"]["Authorization"] == "Bearer s3cret"


def test_long_lists_are_split(scripted):
    url, script = scripted
    images = [jpeg(name) for name in ("chelsea", "coffee", "rocket")] * 3  # 9 images
    with Client(url, max_images=4) as client:
        results = client.predict(images, top_k=1)
    assert [seen["images"] for seen in script.seen] == [4, 4, 1]
    assert [r.top_k[0].index for r in results] == [r.top_k[0].index for r in results[:3]] * 3


@pytest.mark.anyio
async def test_learns_the_servers_image_limit_from_its_413():
    from asgi_lifespan import LifespanManager

    from service import Settings, create_app

    app = create_app(Settings(models=["resnet18:none"], max_images=4))
    sent: list[int] = []

    async def count(request: httpx.Request) -> None:
        if request.method == "POST":
            sent.append((await request.aread()).count(b'name="image"'))

    async with LifespanManager(app, startup_timeout=60):
        client = AsyncClient("http://service", transport=httpx.ASGITransport(app=app))
        client._http.event_hooks["request"] = [count]
        async with client:
            while not await client.ready():
                pass
            sent.clear()
            results = await client.predict([jpeg()] * 10, top_k=2)
            assert client.max_images == 4
    assert len(results) == 10 and sent == [10, 4, 4, 2]


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda c: c.predict(b"not an image"), 400, "invalid_image"),
        (lambda c: c.predict(jpeg(), model="vgg99"), 404, "unknown_model"),
        (lambda c: c.gradcam(jpeg(), layer="nope"), 404, "unknown_layer"),
        (lambda c: c.predict(jpeg(), top_k=0), 422, "invalid_option"),
        (lambda c: c.explain("predict", jpeg(), colour="red"), 422, "invalid_option"),
        (lambda c: c.model("vgg99"), 404, "unknown_model"),
    ],
)
def test_error_answers_are_typed_with_the_apis_code(service_url, call, status, code):
    with Client(service_url) as client, pytest.raises(ApiError) as caught:
        call(client)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message


def test_refuses_what_is_not_an_image():
    with Client("http://127.0.0.1:1") as client:
        with pytest.raises(TypeError, match=r"images\[0\] is a dict"):
            client.predict({"a": 1})
        with pytest.raises(ValueError, match="uint8"):
            client.predict(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="timeout"):
        Client(timeout=0)


@pytest.mark.anyio
async def test_async_client_matches_the_sync_one(service_url):
    images = [jpeg("chelsea"), jpeg("coffee")]
    with Client(service_url) as client:
        expected = client.gradcam(images, return_cam=True)
    async with AsyncClient(service_url) as client:
        assert await client.ready()
        models = await client.models()
        got = await client.gradcam(images, return_cam=True)
    assert models[0]["name"] == "efficientnet_lite0"
    for a, b in zip(expected, got, strict=True):
        assert a.explanations[0].index == b.explanations[0].index
        np.testing.assert_allclose(a.explanations[0].cam, b.explanations[0].cam, atol=1e-4)
        assert Image.open(io.BytesIO(b.explanations[0].overlay_png)).size == (224, 224)

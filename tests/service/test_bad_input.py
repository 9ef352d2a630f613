"""Bad input gets its documented status and code, and the server keeps serving the same answers."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo
from tests.service.conftest import assert_error, b64, image_bytes

pytestmark = pytest.mark.anyio

JPEG = {"content-type": "image/jpeg"}


def encoded(image: Image.Image, format: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A 1-bit PNG of 20000 x 20000 = 400 megapixels, a few hundred kilobytes on the wire."""
    return encoded(Image.new("1", (20_000, 20_000)), "PNG")


def cmyk_jpeg() -> bytes:
    return encoded(photo("chelsea").convert("CMYK"), "JPEG")


def png_16bit() -> bytes:
    gray = np.asarray(photo("coffee").convert("L"), dtype=np.uint16) * 257
    return encoded(Image.fromarray(gray), "PNG")


def palette_png_with_transparency() -> bytes:
    image = photo("chelsea").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encoded(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [photo(name).resize((200, 150)) for name in ("chelsea", "coffee", "rocket")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def exif_rotated(format: str = "JPEG", orientation: int | None = 6) -> bytes:
    """Chelsea stored on her side; EXIF orientation 6 says: rotate 90 degrees clockwise to show."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return encoded(photo("chelsea").transpose(Image.Transpose.ROTATE_90), format, exif=exif)


def tiny_png() -> bytes:
    return encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG")


ACCEPTED = {
    "tiny 1x1": (tiny_png, "image/png"),
    "CMYK JPEG": (cmyk_jpeg, "image/jpeg"),
    "16-bit PNG": (png_16bit, "image/png"),
    "palette PNG with transparency": (palette_png_with_transparency, "image/png"),
    "EXIF rotated photo": (exif_rotated, "image/jpeg"),
    "WebP": (lambda: encoded(photo("coffee"), "WEBP"), "image/webp"),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_unusual_but_valid_images_are_explained(client, case):
    make, content_type = ACCEPTED[case]
    response = await client.post("/gradcam", content=make(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["warnings"] == []


async def test_exif_orientation_is_applied(client):
    png = {"content-type": "image/png"}

    async def scores(data: bytes) -> list:
        response = await client.post("/predict?top_k=3", content=data, headers=png)
        return response.json()["results"][0]["top_k"]

    upright = await scores(image_bytes(format="PNG"))
    assert await scores(exif_rotated("PNG")) == upright
    assert await scores(exif_rotated("PNG", orientation=None)) != upright


async def test_animated_gif_uses_the_first_frame_and_says_so(client):
    response = await client.post(
        "/predict", content=animated_gif(), headers={"content-type": "image/gif"}
    )
    assert response.status_code == 200, response.text
    (warning,) = response.json()["results"][0]["warnings"]
    assert "3 frames" in warning and "first" in warning


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


REFUSED = {
    # name: (method, path, request kwargs, status, code)
    "truncated JPEG": (
        "/predict",
        {"content": truncated(image_bytes()), "headers": JPEG},
        400,
        "invalid_image",
    ),
    "truncated PNG": (
        "/predict",
        {
            "content": truncated(image_bytes("coffee", "PNG")),
            "headers": {"content-type": "image/png"},
        },
        400,
        "invalid_image",
    ),
    "random bytes": (
        "/predict",
        {"content": os.urandom(5000), "headers": JPEG},
        400,
        "invalid_image",
    ),
    "empty body": ("/predict", {"content": b"", "headers": JPEG}, 400, "no_images"),
    "empty multipart part": (
        "/predict",
        {"files": {"image": ("a.jpg", b"", "image/jpeg")}},
        400,
        "invalid_image",
    ),
    "JSON without images": ("/predict", {"json": {"top_k": 3}}, 400, "no_images"),
    "invalid base64": ("/predict", {"json": {"images": ["not*base64!"]}}, 400, "invalid_base64"),
    "base64 of garbage": (
        "/predict",
        {"json": {"images": [b64(b"garbage")]}},
        400,
        "invalid_image",
    ),
    "broken JSON": (
        "/predict",
        {"content": b'{"images": [', "headers": {"content-type": "application/json"}},
        400,
        "invalid_json",
    ),
    "images not a list": ("/predict", {"json": {"images": "abc"}}, 400, "invalid_json"),
    "decompression bomb": (
        "/predict",
        {"content": bomb_png(), "headers": {"content-type": "image/png"}},
        413,
        "image_too_large",
    ),
    "extreme aspect ratio": (
        "/predict",
        {
            "content": encoded(Image.new("RGB", (3000, 2)), "PNG"),
            "headers": {"content-type": "image/png"},
        },
        400,
        "extreme_aspect_ratio",
    ),
    "wrong content type": (
        "/predict",
        {"content": image_bytes(), "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "no content type": (
        "/predict",
        {"content": image_bytes(), "headers": {"content-type": ""}},
        415,
        "unsupported_media_type",
    ),
    "oversized body": (
        "/predict",
        {"content": b"\0" * (32 * 1024 * 1024 + 1), "headers": JPEG},
        413,
        "body_too_large",
    ),
    "too many images": (
        "/predict",
        {"files": [("image", ("a.png", tiny_png(), "image/png"))] * 65},
        413,
        "too_many_images",
    ),
    "other multipart field": (
        "/predict",
        {"files": {"image": ("a.png", tiny_png(), "image/png")}, "data": {"top_k": "3"}},
        422,
        "unexpected_field",
    ),
    "unknown model": (
        "/predict?model=resnet1000",
        {"content": image_bytes(), "headers": JPEG},
        404,
        "unknown_model",
    ),
    "unknown layer": (
        "/gradcam?layer=_blocks.99",
        {"content": image_bytes(), "headers": JPEG},
        404,
        "unknown_layer",
    ),
    "unknown feature layer": (
        "/featuremaps?layers=nope",
        {"content": image_bytes(), "headers": JPEG},
        404,
        "unknown_layer",
    ),
    "unknown method": (
        "/gradcam?method=gradcam3",
        {"content": image_bytes(), "headers": JPEG},
        404,
        "unknown_method",
    ),
    "unknown label": (
        "/gradcam?target=unicorn",
        {"content": image_bytes(), "headers": JPEG},
        404,
        "unknown_label",
    ),
    "class index out of range": (
        "/gradcam?target=1000",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "target_out_of_range",
    ),
    "top_k zero": (
        "/predict?top_k=0",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "invalid_option",
    ),
    "top_k beyond the classes": (
        "/predict?top_k=1001",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "invalid_option",
    ),
    "top_k not a number": (
        "/predict?top_k=ten",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "invalid_option",
    ),
    "top_k in JSON out of range": (
        "/predict",
        {"json": {"images": [b64(tiny_png())], "top_k": -1}},
        422,
        "invalid_option",
    ),
    "unknown option": (
        "/predict?topk=3",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "invalid_option",
    ),
    "unknown JSON option": (
        "/predict",
        {"json": {"images": [b64(tiny_png())], "topk": 3}},
        422,
        "invalid_option",
    ),
    "conflicting options": (
        "/predict?top_k=2",
        {"json": {"images": [b64(tiny_png())], "top_k": 3}},
        422,
        "conflicting_option",
    ),
    "alpha out of range": (
        "/gradcam?alpha=1.5",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "invalid_option",
    ),
    "unknown colormap": (
        "/gradcam?colormap=rainbowz",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "unknown_colormap",
    ),
    "max_channels zero": (
        "/featuremaps?max_channels=0",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "invalid_option",
    ),
    "non-spatial layer": (
        "/gradcam?layer=_fc",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "layer_not_spatial",
    ),
    "shared layer": (
        "/featuremaps?model=resnet18&layers=layer1.0.relu",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "ambiguous_layer",
    ),
    "cam on a model without a GAP head": (
        "/gradcam?model=alexnet&method=cam",
        {"content": image_bytes(), "headers": JPEG},
        422,
        "method_not_applicable",
    ),
    "GET on an explanation endpoint": ("GET /predict", {}, 405, "method_not_allowed"),
    "no such path": ("GET /nowhere", {}, 404, "not_found"),
}


async def test_every_refusal_has_its_status_and_code_and_the_server_keeps_serving(client):
    before = await client.post("/gradcam?return_cam=true", content=image_bytes(), headers=JPEG)
    assert before.status_code == 200
    for name, (target, kwargs, status, code) in REFUSED.items():
        verb, _, path = target.rpartition(" ")
        response = await client.request(verb or "POST", path, **kwargs)
        assert response.status_code == status and response.json()["error"]["code"] == code, (
            name,
            response.status_code,
            response.text[:300],
        )
        assert_error(response, status, code)
    after = await client.post("/gradcam?return_cam=true", content=image_bytes(), headers=JPEG)
    assert after.json()["results"] == before.json()["results"]
    metrics = (await client.get("/metrics")).text
    assert 'explain_errors_total{code="invalid_image"}' in metrics
    assert "internal_error" not in metrics


async def test_an_ambiguous_label_lists_its_indices(app, client, monkeypatch):
    from explain.models import Labels

    served = app.state.service.models["resnet18"]
    names = list(served.loaded.labels)
    names[7] = names[3]  # two classes with one name
    monkeypatch.setattr(served.loaded, "labels", Labels(names))
    response = await client.post(
        "/gradcam",
        params={"model": "resnet18", "target": names[3]},
        content=image_bytes(),
        headers=JPEG,
    )
    error = assert_error(response, 422, "ambiguous_label")
    assert "[3, 7]" in error["message"]

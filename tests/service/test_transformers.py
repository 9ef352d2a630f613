"""A vision transformer served: its token layers listed as maps, default layers that work, and
the guided methods refused because its MLPs use GELU."""

from __future__ import annotations

import numpy as np
import pytest

from service import Settings, create_app
from tests.service.conftest import assert_error, image_bytes, png_array, running_client

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def vit(anyio_backend):
    app = create_app(Settings(models=["vit_b_16:none"], max_batch_wait_ms=5))
    async with running_client(app) as client:
        yield client


async def test_token_layers_are_listed_as_spatial(vit):
    detail = (await vit.get("/models/vit_b_16")).json()
    assert detail["default_layer"] == "encoder.layers.encoder_layer_11.ln_1"
    assert detail["feature_layers"][0] == "conv_proj"
    layers = {layer["name"]: layer for layer in detail["layers"]}
    assert layers["encoder.layers.encoder_layer_11.ln_1"] == {
        "name": "encoder.layers.encoder_layer_11.ln_1",
        "type": "LayerNorm",
        "output_shape": [197, 768],
        "spatial": True,
        "map_shape": [768, 14, 14],
        "layout": "tokens",
    }
    assert layers["heads.head"]["spatial"] is False and layers["heads.head"]["layout"] is None


async def test_feature_maps_and_cams_by_default(vit):
    data = image_bytes()
    maps = await vit.post(
        "/featuremaps?max_channels=4", content=data, headers={"content-type": "image/jpeg"}
    )
    assert maps.status_code == 200, maps.text
    shown = maps.json()["results"][0]["featuremaps"]
    assert [m["shape"] for m in shown] == [[768, 14, 14]] * 5
    assert png_array(shown[1]["png"]).shape == (2 + 2 * 16, 2 + 2 * 16)  # four 14 x 14 tiles
    for method in ("gradcam", "layercam", "eigencam"):
        response = await vit.post(
            "/gradcam",
            params={"method": method, "return_cam": "true"},
            content=data,
            headers={"content-type": "image/jpeg"},
        )
        assert response.status_code == 200, response.text
        (explanation,) = response.json()["results"][0]["explanations"]
        assert explanation["layer"] == "encoder.layers.encoder_layer_11.ln_1"
        assert explanation["cam"]["shape"] == [14, 14]
        assert png_array(explanation["heatmap_png"]).shape == (224, 224, 3)
    # torchvision initialises the ViT's classifier to zeros: with weights=None every logit is 0,
    # so the class gradient, and every gradient map, is 0; Eigen-CAM needs no gradient.
    assert np.array(explanation["cam"]["values"]).max() == 1.0


@pytest.mark.parametrize("method", ["guided_backprop", "guided_gradcam"])
async def test_guided_methods_are_refused_for_gelu(vit, method):
    response = await vit.post(
        f"/gradcam?method={method}", content=image_bytes(), headers={"content-type": "image/jpeg"}
    )
    error = assert_error(response, 422, "method_not_applicable")
    assert "GELU" in error["message"]

"""Every endpoint and option, through httpx against the app with its lifespan running."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.service.conftest import assert_error, b64, image_bytes, png_array

pytestmark = pytest.mark.anyio

CAT_CLASSES = set(range(281, 286))


# -- three forms ----------------------------------------------------------------------------------


async def test_predict_raw_body(client):
    response = await client.post(
        "/predict", content=image_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "efficientnet_lite0"
    (result,) = body["results"]
    assert len(result["top_k"]) == 5 and result["warnings"] == []
    assert result["top_k"][0]["index"] in CAT_CLASSES
    scores = [entry["score"] for entry in result["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert set(body["timing_ms"]) >= {"decode", "inference", "total"}


async def test_the_three_forms_give_the_same_answer(client):
    data = image_bytes("coffee", "PNG")
    raw = await client.post("/predict?top_k=3", content=data, headers={"content-type": "image/png"})
    multipart = await client.post(
        "/predict?top_k=3", files={"image": ("cup.png", data, "image/png")}
    )
    json_form = await client.post("/predict", json={"images": [b64(data)], "top_k": 3})
    data_url = await client.post(
        "/predict", json={"images": ["data:image/png;base64," + b64(data)], "top_k": 3}
    )
    answers = [r.json()["results"] for r in (raw, multipart, json_form, data_url)]
    assert all(a == answers[0] for a in answers)
    assert answers[0][0]["top_k"][0]["label"] == "espresso"


async def test_a_batch_answers_in_request_order(client):
    names = ["coffee", "chelsea", "rocket"]
    files = [("image", (f"{n}.jpg", image_bytes(n), "image/jpeg")) for n in names]
    response = await client.post("/predict?top_k=1", files=files)
    labels = [r["top_k"][0]["label"] for r in response.json()["results"]]
    assert labels[0] == "espresso" and labels[2] == "missile"
    assert response.json()["results"][1]["top_k"][0]["index"] in CAT_CLASSES


async def test_top_k_and_model_options(client):
    response = await client.post(
        "/predict", json={"images": [b64(image_bytes())], "top_k": 1000, "model": "alexnet"}
    )
    body = response.json()
    assert body["model"] == "alexnet" and len(body["results"][0]["top_k"]) == 1000


# -- /featuremaps ---------------------------------------------------------------------------------


async def test_featuremaps_default_layers_of_alexnet(client):
    response = await client.post(
        "/featuremaps?model=alexnet", files={"image": ("cat.jpg", image_bytes(), "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    maps = result["featuremaps"]
    assert [m["layer"] for m in maps] == [
        "features.0",
        "features.3",
        "features.6",
        "features.8",
        "features.10",
    ]
    assert [m["shape"] for m in maps] == [
        [64, 55, 55],
        [192, 27, 27],
        [384, 13, 13],
        [256, 13, 13],
        [256, 13, 13],
    ]
    assert all(m["channels_shown"] == 64 for m in maps)
    grid = png_array(maps[0]["png"])
    assert grid.shape == (8 * 57 + 2, 8 * 57 + 2)  # 8 x 8 tiles of 55 px with 2 px padding
    assert len(result["top_k"]) == 5


async def test_featuremaps_chosen_layers_and_channel_limit(client):
    response = await client.post(
        "/featuremaps?layers=_blocks.2,_head_act&layers=_stem_act&max_channels=9",
        content=image_bytes(),
        headers={"content-type": "image/jpeg"},
    )
    maps = response.json()["results"][0]["featuremaps"]
    assert [(m["layer"], m["shape"], m["channels_shown"]) for m in maps] == [
        ("_blocks.2", [24, 56, 56], 9),
        ("_head_act", [1280, 7, 7], 9),
        ("_stem_act", [32, 112, 112], 9),
    ]
    assert png_array(maps[0]["png"]).shape == (3 * 58 + 2, 3 * 58 + 2)


# -- /gradcam -------------------------------------------------------------------------------------


async def test_gradcam_defaults(client):
    response = await client.post(
        "/gradcam", content=image_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    (explanation,) = result["explanations"]
    assert explanation["index"] == result["top_k"][0]["index"]
    assert explanation["score"] == result["top_k"][0]["score"]
    assert (explanation["method"], explanation["layer"]) == ("gradcam", "_head_act")
    assert "cam" not in explanation
    overlay, heatmap = png_array(explanation["overlay_png"]), png_array(explanation["heatmap_png"])
    assert overlay.shape == heatmap.shape == (224, 224, 3)


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "cam"]
)
async def test_gradcam_methods_and_raw_cam(client, method):
    response = await client.post(
        "/gradcam",
        json={
            "images": [b64(image_bytes())],
            "method": method,
            "target": ["tabby", 285],
            "return_cam": True,
        },
    )
    assert response.status_code == 200, response.text
    explanations = response.json()["results"][0]["explanations"]
    assert [(e["index"], e["label"]) for e in explanations] == [
        (281, "tabby"),
        (285, "Egyptian cat"),
    ]
    for explanation in explanations:
        assert explanation["method"] == method
        cam = explanation["cam"]
        values = np.array(cam["values"])
        assert cam["shape"] == [7, 7] and values.shape == (7, 7)
        assert values.min() >= 0 and values.max() in (0.0, 1.0)


async def test_scorecam_on_a_small_layer(client):
    response = await client.post(
        "/gradcam?model=alexnet&method=scorecam&layer=features.11&target=1",
        content=image_bytes("coffee"),
        headers={"content-type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    (explanation,) = response.json()["results"][0]["explanations"]
    assert (explanation["method"], explanation["index"]) == ("scorecam", 1)


async def test_gradcam_layer_alpha_and_colormap(client):
    data = image_bytes()

    async def overlay(**params) -> np.ndarray:
        response = await client.post(
            "/gradcam", params={"model": "resnet18", "target": 3, **params}, files={"image": data}
        )
        assert response.status_code == 200, response.text
        explanation = response.json()["results"][0]["explanations"][0]
        return (
            png_array(explanation["overlay_png"]),
            png_array(explanation["heatmap_png"]),
            explanation,
        )

    plain, heat, explanation = await overlay(alpha=0)
    assert explanation["layer"] == "layer4"
    opaque, _, _ = await overlay(alpha=1)
    assert np.array_equal(opaque, heat)  # alpha 1: only the heatmap
    _, viridis, _ = await overlay(colormap="viridis")
    assert not np.array_equal(viridis, heat)
    _, _, layer3 = await overlay(layer="layer3", return_cam="true")
    assert layer3["layer"] == "layer3" and layer3["cam"]["shape"] == [14, 14]
    # alpha 0 shows the model's view of the image: chelsea resized and centre-cropped.
    assert plain.std() > 20


async def test_gradcam_batch_with_mixed_top1(client):
    files = [("image", image_bytes(n)) for n in ("coffee", "rocket")]
    response = await client.post("/gradcam", files=files)
    results = response.json()["results"]
    assert [r["explanations"][0]["label"] for r in results] == ["espresso", "missile"]


# -- discovery and operations ---------------------------------------------------------------------


async def test_models_list_and_detail(client):
    models = (await client.get("/models")).json()
    assert [m["name"] for m in models] == ["efficientnet_lite0", "alexnet", "resnet18"]
    lite0 = models[0]
    assert lite0["pretrained"] is True and lite0["num_classes"] == 1000
    assert lite0["input_size"] == [224, 224] and lite0["default_layer"] == "_head_act"
    assert models[1]["pretrained"] is False
    detail = (await client.get("/models/alexnet")).json()
    layers = {layer["name"]: layer for layer in detail["layers"]}
    assert layers["features.0"] == {
        "name": "features.0",
        "type": "Conv2d",
        "output_shape": [64, 55, 55],
        "spatial": True,
        "map_shape": [64, 55, 55],
        "layout": "chw",
    }
    assert layers["classifier.6"]["output_shape"] == [1000]
    resnet = {layer["name"] for layer in (await client.get("/models/resnet18")).json()["layers"]}
    assert "layer4" in resnet and "layer4.0.relu" not in resnet  # runs twice: not hookable
    assert_error(await client.get("/models/resnet50"), 404, "unknown_model")


async def test_health_readiness_and_metrics(client):
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        "explain_requests_total",
        "explain_request_seconds_bucket",
        "explain_batch_images_bucket",
        "explain_queue_images",
        "explain_errors_total",
        "explain_ready 1.0",
    ):
        assert name in text
    assert re.search(r'explain_requests_total\{endpoint="/predict",status="200"\} [1-9]', text)


async def test_docs_work_offline(client):
    page = await client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and all(not re.match(r"(https?:)?//", a) for a in assets), assets
    for asset in assets:
        assert (await client.get(asset)).status_code == 200, asset
    schema = (await client.get("/openapi.json")).json()
    gradcam = schema["paths"]["/gradcam"]["post"]
    query = {p["name"] for p in gradcam["parameters"]}
    assert query == {
        "model",
        "top_k",
        "method",
        "layer",
        "target",
        "alpha",
        "colormap",
        "return_cam",
        "faithfulness",
    }
    content = gradcam["requestBody"]["content"]
    assert set(content) == {
        "multipart/form-data",
        "application/json",
        "image/*",
        "application/octet-stream",
    }
    assert "images" in content["application/json"]["schema"]["properties"]
    features = {p["name"] for p in schema["paths"]["/featuremaps"]["post"]["parameters"]}
    assert features == {"model", "top_k", "layers", "max_channels"}


# -- guided methods and faithfulness --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "layer"), [("guided_backprop", None), ("guided_gradcam", "_head_act")]
)
async def test_guided_methods_answer_at_input_resolution(client, method, layer):
    response = await client.post(
        "/gradcam",
        params={"method": method, "target": [281, 285], "return_cam": "true"},
        content=image_bytes(),
        headers={"content-type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    explanations = response.json()["results"][0]["explanations"]
    assert [e["index"] for e in explanations] == [281, 285]
    for explanation in explanations:
        assert (explanation["method"], explanation["layer"]) == (method, layer)
        overlay = png_array(explanation["overlay_png"])
        heatmap = png_array(explanation["heatmap_png"])
        assert overlay.shape == heatmap.shape == (224, 224, 3)
        values = np.array(explanation["cam"]["values"])
        assert explanation["cam"]["shape"] == [224, 224] and values.shape == (224, 224)
        assert values.min() >= 0 and values.max() == 1.0
        assert "faithfulness" not in explanation


async def test_faithfulness_scores_come_with_each_explanation(client):
    response = await client.post(
        "/gradcam",
        json={"images": [b64(image_bytes())], "target": ["tabby", 285], "faithfulness": True},
    )
    assert response.status_code == 200, response.text
    explanations = response.json()["results"][0]["explanations"]
    assert len(explanations) == 2
    for explanation in explanations:
        scores = explanation["faithfulness"]
        assert set(scores) == {"confidence_change", "deletion_auc", "insertion_auc"}
        assert -1 <= scores["confidence_change"] <= 1
        assert 0 <= scores["deletion_auc"] <= 1 and 0 <= scores["insertion_auc"] <= 1
    # The cat classes' evidence is the cat: inserting it back in map order recovers the score
    # faster than deleting it in that order keeps it.
    tabby = explanations[0]["faithfulness"]
    assert tabby["insertion_auc"] > tabby["deletion_auc"]
    query = await client.post(
        "/gradcam?faithfulness=true&target=281&method=guided_backprop",
        content=image_bytes(),
        headers={"content-type": "image/jpeg"},
    )
    assert query.status_code == 200, query.text
    assert set(query.json()["results"][0]["explanations"][0]["faithfulness"]) == set(tabby)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"faithfulness": "maybe"}, 422, "invalid_option"),
        ({"method": "guided_backprop", "layer": "_head_act"}, 422, "invalid_option"),
        ({"method": "guided_gradcam", "layer": "_fc"}, 422, "layer_not_spatial"),
        ({"method": "guided_backpropagation"}, 404, "unknown_method"),
    ],
)
async def test_guided_and_faithfulness_options_are_checked(client, params, status, code):
    response = await client.post(
        "/gradcam", params=params, content=image_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert_error(response, status, code)

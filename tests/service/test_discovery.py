"""Discovery for clients that show what the service offers: the model's resize and crop, its labels,
and every CAM method with its cost at a layer."""

from __future__ import annotations

from explain.methods import method_names
from tests.service.conftest import assert_error


async def test_model_info_has_the_resize_and_crop(client):
    models = {m["name"]: m for m in (await client.get("/models")).json()}
    assert (
        models["efficientnet_lite0"]["resize_size"],
        models["efficientnet_lite0"]["crop_size"],
    ) == (
        256,
        224,
    )
    assert (models["alexnet"]["resize_size"], models["alexnet"]["crop_size"]) == (256, 224)


async def test_model_detail_lists_methods_with_their_cost(client):
    detail = (await client.get("/models/efficientnet_lite0")).json()
    methods = {m["name"]: m for m in detail["methods"]}
    assert list(methods) == method_names()
    # _head_act has 1280 channels; the service scores the 128 strongest (the default setting).
    assert methods["scorecam"]["cost"] == 129.0
    assert methods["gradcam"]["cost"] == 1.0
    assert methods["eigencam"]["class_specific"] is False
    assert methods["gradcam"]["class_specific"] is True
    assert methods["eigencam"]["description"].startswith("Eigen-CAM: ")
    assert all(m["unavailable"] is None for m in methods.values())


async def test_method_costs_at_another_layer(client):
    answer = (await client.get("/models/efficientnet_lite0/methods?layer=_blocks.0")).json()
    assert answer["model"] == "efficientnet_lite0" and answer["layer"] == "_blocks.0"
    costs = {m["name"]: m["cost"] for m in answer["methods"]}
    assert costs["scorecam"] == 17.0  # 16 channels, all scored
    default = (await client.get("/models/efficientnet_lite0/methods")).json()
    assert default["layer"] == "_head_act"
    assert_error(
        await client.get("/models/efficientnet_lite0/methods?layer=_blocks.99"),
        404,
        "unknown_layer",
    )
    assert_error(
        await client.get("/models/efficientnet_lite0/methods?layer=_fc"), 422, "layer_not_spatial"
    )
    assert_error(await client.get("/models/resnet5/methods"), 404, "unknown_model")


async def test_labels(client):
    answer = (await client.get("/models/efficientnet_lite0/labels")).json()
    assert answer["model"] == "efficientnet_lite0" and len(answer["labels"]) == 1000
    assert answer["labels"][281] == "tabby" and answer["labels"][967] == "espresso"
    assert_error(await client.get("/models/resnet5/labels"), 404, "unknown_model")


async def test_the_new_fields_are_in_the_openapi_schema(client):
    schema = (await client.get("/openapi.json")).json()
    assert {"/models/{name}/labels", "/models/{name}/methods"} <= set(schema["paths"])
    components = schema["components"]["schemas"]
    assert {"resize_size", "crop_size"} <= set(components["ModelInfo"]["properties"])
    assert "methods" in components["ModelDetail"]["properties"]
    assert {"name", "class_specific", "cost", "description", "unavailable"} == set(
        components["MethodInfo"]["properties"]
    )

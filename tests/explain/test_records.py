"""Plans: options checked before any image is read, records with pictures drawn only on demand."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from explain.errors import (
    InvalidOptionError,
    LayerNotSpatialError,
    LayerRequiredError,
    UnknownLabelError,
    UnknownLayerError,
    UnknownMethodError,
    UnknownNameError,
)
from explain.images import prepare_image
from explain.methods import method_names
from explain.models import load_model
from explain.records import PICTURE_FIELDS, Picture, make_plan, map_pictures, render_record
from explain.render import UnknownColormapError
from explain.tasks import CAMTask, TaskRunner
from tests.conftest import photo


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    model = load_model("resnet18:none")
    yield model
    model.close()


@pytest.fixture(scope="module")
def chelsea(loaded):
    buffer = io.BytesIO()
    photo("chelsea").save(buffer, format="JPEG")
    return prepare_image(buffer.getvalue(), loaded.preprocess)


def run(loaded, plan, image):
    (output,) = TaskRunner(loaded)(plan.task, image.tensor[None], [plan.targets])
    return render_record(plan, image, output)


@pytest.mark.parametrize(
    ("endpoint", "options", "error", "match"),
    [
        ("predict", {"top_k": 0}, InvalidOptionError, "top_k is 0"),
        ("predict", {"top_k": 1001}, InvalidOptionError, "1000 classes"),
        ("predict", {"top_k": True}, InvalidOptionError, "top_k"),
        ("featuremaps", {"layers": ["fc"]}, LayerNotSpatialError, "'fc'"),
        ("featuremaps", {"max_channels": 0}, InvalidOptionError, "max_channels"),
        ("gradcam", {"method": "nope"}, UnknownMethodError, "nope"),
        ("gradcam", {"target": ["no such class"]}, UnknownLabelError, "no such class"),
        ("gradcam", {"colormap": "nope"}, UnknownColormapError, "nope"),
        ("gradcam", {"alpha": 1.5}, InvalidOptionError, "alpha"),
        ("explode", {}, UnknownNameError, "explode"),
    ],
)
def test_options_are_checked_when_the_plan_is_made(loaded, endpoint, options, error, match):
    with pytest.raises(error, match=match):
        make_plan(endpoint, loaded, **options)


def test_a_model_without_default_layers_needs_one(loaded):
    # Every registered architecture has defaults now; a model registered without them has none.
    bare = dataclasses.replace(loaded, target_layer=None, feature_layers=[])
    with pytest.raises(LayerRequiredError, match="no default CAM layer"):
        make_plan("gradcam", bare)
    with pytest.raises(LayerRequiredError, match="no default feature layers"):
        make_plan("featuremaps", bare)
    assert make_plan("gradcam", bare, layer="layer3").task.layer == "layer3"


def test_gradcam_record_draws_its_pictures_when_encoded(loaded, chelsea):
    plan = make_plan("gradcam", loaded, target=[281, "tabby"], return_cam=True, top_k=3)
    record = run(loaded, plan, chelsea)
    assert [e["index"] for e in record["explanations"]] == [281, 281]
    assert len(record["top_k"]) == 3 and record["warnings"] == []
    explanation = record["explanations"][0]
    assert explanation["cam"]["shape"] == [7, 7]
    overlay = Image.open(io.BytesIO(explanation["overlay_png"].encode()))
    heatmap = Image.open(io.BytesIO(explanation["heatmap_png"].encode()))
    assert overlay.size == heatmap.size == (224, 224)
    assert (overlay.mode, heatmap.mode) == ("RGB", "P")


def test_featuremap_layers_are_folded_and_pictures_become_files(loaded, chelsea):
    plan = make_plan("featuremaps", loaded, layers=["layer1", "layer1", "layer4"], max_channels=4)
    record = run(loaded, plan, chelsea)
    assert [m["layer"] for m in record["featuremaps"]] == ["layer1", "layer4"]

    def to_file(picture: Picture, field: str, entry: dict) -> str:
        assert field == "png"
        return f"{entry['layer']}.png"

    as_files = map_pictures(record, to_file, rename=PICTURE_FIELDS)
    assert [m["png_file"] for m in as_files["featuremaps"]] == ["layer1.png", "layer4.png"]
    assert "png" not in as_files["featuremaps"][0]
    grid = np.asarray(Image.open(io.BytesIO(record["featuremaps"][1]["png"].encode())))
    assert grid.shape == (2 + 2 * (7 + 2), 2 + 2 * (7 + 2))  # four 7x7 tiles, 2 per row


def test_task_cost_counts_forward_passes(loaded):
    runner = TaskRunner(loaded, {"scorecam": {"max_channels": 128}})
    assert runner.cost(make_plan("predict", loaded).task) == 1.0
    assert runner.cost(make_plan("featuremaps", loaded).task) == 1.0
    assert runner.cost(make_plan("gradcam", loaded).task) == 1.0
    assert runner.cost(make_plan("gradcam", loaded, method="scorecam").task) == 1.0 + 128
    assert TaskRunner(loaded).cost(make_plan("gradcam", loaded, method="scorecam").task) == 513.0
    # A recording forward pass (1.2) and a backward pass to the input per class (1.7), measured.
    guided = make_plan("gradcam", loaded, method="guided_backprop").task
    assert runner.cost(guided) == pytest.approx(2.9)
    assert runner.cost(guided, targets=3) == pytest.approx(1.2 + 3 * 1.7)
    # Asked at a layer, as a caller that lists every method at one layer does: the layer is moot.
    assert runner.cost(CAMTask("guided_backprop", "layer4")) == pytest.approx(2.9)
    assert runner.method("guided_backprop", "layer4") is runner.method("guided_backprop", None)
    assert runner.cost(make_plan("gradcam", loaded, method="guided_gradcam").task) == pytest.approx(
        3.9
    )
    # Faithfulness: 2 baselines per image, 31 perturbed images per class.
    scored = make_plan("gradcam", loaded, faithfulness=True).task
    assert runner.cost(scored) == 1.0 + 33 and runner.cost(scored, targets=2) == 1.0 + 2 + 62


def test_methods_described_with_their_cost_at_a_layer(loaded):
    runner = TaskRunner(loaded, {"scorecam": {"max_channels": 128}})
    methods = {m["name"]: m for m in runner.describe_methods()}
    assert list(methods) == method_names()
    assert methods["gradcam"] == {
        "name": "gradcam",
        "class_specific": True,
        "cost": 1.0,
        "description": "Grad-CAM: channels weighted by their mean gradient (Selvaraju et al., "
        "ICCV 2017).",
        "unavailable": None,
    }
    assert methods["scorecam"]["cost"] == 129.0  # layer4: 512 channels, 128 scored
    assert methods["eigencam"]["class_specific"] is False
    at_layer1 = {m["name"]: m["cost"] for m in runner.describe_methods("layer1")}
    assert at_layer1["scorecam"] == 65.0  # 64 channels, all scored
    with pytest.raises(UnknownLayerError, match="layer9"):
        runner.describe_methods("layer9")
    with pytest.raises(LayerNotSpatialError):
        runner.describe_methods("fc")


def test_a_method_that_cannot_be_set_up_says_why():
    squeezenet = load_model("squeezenet1_0:none")  # its classifier is a convolution
    try:
        methods = {m["name"]: m for m in TaskRunner(squeezenet).describe_methods()}
        assert methods["cam"]["cost"] is None
        assert methods["cam"]["unavailable"] == "cam needs a model whose head is a linear layer"
        assert methods["gradcam"]["unavailable"] is None
        squeezenet.target_layer = None
        assert {m["cost"] for m in TaskRunner(squeezenet).describe_methods()} == {None}
    finally:
        squeezenet.close()

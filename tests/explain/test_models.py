from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from explain.errors import (
    AmbiguousLabelError,
    InvalidWeightsError,
    TargetOutOfRangeError,
    UnknownLabelError,
    UnknownModelError,
)
from explain.models import (
    IMAGENET_CATEGORIES,
    Labels,
    get_entry,
    load_model,
    model_names,
    parse_spec,
    register_model,
)


@pytest.fixture(scope="module")
def lite0():
    model = load_model("efficientnet_lite0")
    yield model
    model.close()


def test_registry_holds_torchvision_models_and_lite0():
    names = model_names()
    assert {"efficientnet_lite0", "alexnet", "resnet50", "vgg16", "mobilenet_v3_large"} <= set(
        names
    )
    assert len(names) > 80


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'resnet5'; did you mean: resnet50"):
        load_model("resnet5")


def test_names_are_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_model(
            "alexnet", weights=get_entry("alexnet").weights, target_layer=None, feature_layers=[]
        )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resnet50", ("resnet50", None)),
        (" resnet50:IMAGENET1K_V2 ", ("resnet50", "IMAGENET1K_V2")),
        ("alexnet:none", ("alexnet", "none")),
        ("resnet18:/weights/r18.pt", ("resnet18", "/weights/r18.pt")),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", ":none", "resnet50:"])
def test_parse_spec_refuses_empty_parts(spec):
    with pytest.raises(ValueError, match="model spec"):
        parse_spec(spec)


def test_weights_records_carry_their_own_preprocessing_without_downloading():
    weights = get_entry("resnet50").weights
    assert weights("IMAGENET1K_V1").preprocess.resize_size == 256
    assert weights("IMAGENET1K_V2").preprocess.resize_size == 232
    assert weights(None).name == "IMAGENET1K_V2"
    assert len(weights(None).labels) == 1000
    with pytest.raises(InvalidWeightsError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_model("resnet50:IMAGENET1K_V9")


def test_lite0_loads_offline_with_its_metadata(lite0):
    summary = lite0.describe(with_layers=True)
    assert summary["pretrained"] is True
    assert summary["num_classes"] == 1000 and summary["input_size"] == [224, 224]
    assert summary["resize_size"] == 256 and summary["crop_size"] == 224
    assert summary["default_layer"] == "_head_act"
    layers = {layer["name"]: layer for layer in summary["layers"]}
    assert layers["_head_act"]["output_shape"] == [1280, 7, 7]
    assert layers["_fc"]["output_shape"] == [1000] and not layers["_fc"]["spatial"]
    assert all(not p.requires_grad for p in lite0.model.parameters())
    assert not lite0.model.training


def test_lite0_matches_the_reference_implementation(lite0):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0").eval()
    reference.load_state_dict(lite0.model.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lite0.model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_alexnet_feature_maps_of_every_conv_layer():
    from explain.featuremaps import capture_feature_maps

    model = load_model("alexnet:none")
    assert model.feature_layers == [
        "features.0",
        "features.3",
        "features.6",
        "features.8",
        "features.10",
    ]
    result = capture_feature_maps(model.hooks, torch.randn(2, 3, 224, 224), model.feature_layers)
    shapes = [tuple(result.maps[layer].shape[1:]) for layer in model.feature_layers]
    assert shapes == [(64, 55, 55), (192, 27, 27), (384, 13, 13), (256, 13, 13), (256, 13, 13)]
    assert result.logits.shape == (2, 1000)
    assert model.target_layer == "features.11"
    assert not model.pretrained and model.weights == "none"
    model.close()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_files_load(tmp_path, suffix):
    torch.manual_seed(3)
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pt":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    model = load_model(f"resnet18:{path}")
    assert model.pretrained and model.weights == str(path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.model.state_dict()[name], tensor), name
    model.close()


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_state_dict_files_are_loaded_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"fc.weight": Payload()}, f)
    with pytest.raises(InvalidWeightsError, match="cannot read weights file"):
        load_model(f"resnet18:{path}")


def test_state_dicts_that_do_not_fit_are_refused(tmp_path):
    import torchvision

    path = tmp_path / "alexnet.pt"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    with pytest.raises(InvalidWeightsError, match="do not fit 'resnet18'"):
        load_model(f"resnet18:{path}")
    with pytest.raises(InvalidWeightsError, match="does not exist"):
        load_model(f"resnet18:{tmp_path / 'missing.pt'}")


def test_labels_resolve_indices_and_names():
    labels = Labels(IMAGENET_CATEGORIES)
    assert labels.resolve(285) == labels.resolve("285") == 285
    assert labels.resolve("Egyptian cat") == labels.resolve("  egyptian CAT ") == 285
    # torchvision renamed ImageNet's duplicate "crane": the bird is "crane bird", the machine "crane".
    assert (labels.resolve("crane bird"), labels.resolve("crane")) == (134, 517)
    with pytest.raises(AmbiguousLabelError, match=r"\[1, 2\]") as info:
        Labels(["cat", "Crane", "crane", "dog"]).resolve("CRANE")
    assert info.value.indices == [1, 2]
    with pytest.raises(UnknownLabelError, match="did you mean: Egyptian cat"):
        labels.resolve("egyptian kat")
    with pytest.raises(TargetOutOfRangeError, match=r"0\.\.999"):
        labels.resolve(1000)
    with pytest.raises(TargetOutOfRangeError):
        labels.resolve("-1")


@pytest.mark.parametrize(
    ("size", "mode"), [((1, 1), "RGB"), ((640, 20), "L"), ((300, 451), "RGBA")]
)
def test_preprocess_gives_the_model_input_size(lite0, size, mode):
    image = Image.new(mode, size)
    crop = lite0.preprocess.crop(image)
    assert crop.shape == (224, 224, 3) and crop.dtype == torch.uint8
    assert lite0.preprocess(image).shape == (3, 224, 224)


@pytest.mark.parametrize("spec", ["efficientnet_lite0", "resnet50:none", "inception_v3:none"])
def test_preprocess_matches_torchvision_transforms(spec):
    from torchvision.transforms import v2

    from tests.conftest import photo

    entry = get_entry(parse_spec(spec)[0])
    preprocess = entry.weights(None).preprocess
    reference = (
        v2.Compose(  # on the PIL image, as torchvision's weights transforms do for PIL input
            [
                v2.Resize(
                    preprocess.resize_size,
                    interpolation=v2.InterpolationMode(preprocess.interpolation),
                    antialias=True,
                ),
                v2.CenterCrop(preprocess.crop_size),
                v2.PILToTensor(),
            ]
        )
    )
    for name in ("chelsea", "coffee", "astronaut"):
        image = photo(name)
        expected = reference(image).permute(1, 2, 0)
        ours = preprocess.crop(image)
        difference = (ours.int() - expected.int()).abs()
        assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01, name
        normalized = v2.Normalize(preprocess.mean, preprocess.std)(
            ours.permute(2, 0, 1).float() / 255
        )
        torch.testing.assert_close(preprocess.normalize(ours), normalized)

"""The CAM family against reference implementations and against its own contract.

Oracles: pytorch-grad-cam (``grad-cam`` on PyPI) for every method it implements, captum's
``LayerGradCam`` for Grad-CAM, and the textbook formula for CAM. Maps are compared at the layer's
resolution, after ReLU, both raw (tolerance relative to the map's peak) and normalised by their
maximum (absolute tolerance). The tolerance is 1e-4; measured differences are around 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from explain.errors import MethodNotApplicableError, TargetOutOfRangeError, UnknownMethodError
from explain.hooks import ModelHooks
from explain.methods import get_method, method_names, normalize_maps, upsample_maps

TOLERANCE = 1e-4

ORACLES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "hirescam": pgc.HiResCAM,
    "scorecam": pgc.ScoreCAM,
    "eigencam": pgc.EigenCAM,
}


def oracle_maps(
    method: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int]
):
    """pytorch-grad-cam's raw maps at layer resolution: its own capture, backward and formula,
    stopping before it resizes to the input (``BaseCAM.forward`` without ``scale_cam_image``)."""
    cam = ORACLES[method](model=model, target_layers=[layer])
    cam.batch_size = 32
    try:
        outputs = cam.activations_and_grads(x)
        wanted = [ClassifierOutputTarget(t) for t in targets]
        if cam.uses_gradients:
            model.zero_grad()
            sum(target(output) for target, output in zip(wanted, outputs, strict=True)).backward()
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None
        raw = cam.get_cam_image(x, layer, wanted, activations, grads, False)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(raw, dtype=np.float32))


def assert_maps_match(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.relu(), theirs.relu()
    assert theirs.amax() > 0, "a reference map that is all zero would prove nothing"
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE * float(theirs.abs().amax()))
    difference = float((normalize_maps(ours) - normalize_maps(theirs)).abs().max())
    assert difference <= TOLERANCE
    return difference


CASES = {
    # name: (model factory, our layer, oracle layer getter, input shape, two targets per image)
    "resnet18": (
        lambda: torchvision.models.resnet18(weights=None),
        "layer4",
        lambda m: m.layer4[-1],
        (2, 3, 96, 96),
        [[3, 42], [7, 981]],
    ),
    "small_cnn": (None, "features.5", lambda m: m.features[5], (2, 3, 32, 32), [[1, 4], [6, 9]]),
}


@pytest.fixture(params=sorted(CASES))
def case(request, small_cnn):
    factory, layer, oracle_layer, shape, targets = CASES[request.param]
    torch.manual_seed(0)
    model = (factory() if factory else small_cnn).eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return model, layer, oracle_layer(model), x, targets


@pytest.mark.parametrize("method", sorted(ORACLES))
def test_maps_match_pytorch_grad_cam(method, case):
    model, layer, oracle_layer, x, targets = case
    with ModelHooks(model) as hooks:
        result = get_method(method)(hooks, layer)(x, targets)
    for j in range(2):
        ours = torch.stack([maps[j] for maps in result.maps])
        theirs = oracle_maps(method, model, oracle_layer, x, [t[j] for t in targets])
        if method == "eigencam":  # a principal component's sign is arbitrary
            theirs = theirs * torch.sign((ours * theirs).sum(dim=(1, 2)))[:, None, None]
        assert ours.shape == theirs.shape == (x.shape[0], *ours.shape[1:])
        assert_maps_match(ours, theirs)


def test_gradcam_matches_captum_layer_gradcam(case):
    from captum.attr import LayerGradCam

    model, layer, oracle_layer, x, targets = case
    with ModelHooks(model) as hooks:
        result = get_method("gradcam")(hooks, layer)(x, [t[0] for t in targets])
    theirs = LayerGradCam(model, oracle_layer).attribute(
        x, target=[t[0] for t in targets], relu_attributions=True
    )
    model.zero_grad(set_to_none=True)
    assert_maps_match(torch.cat(result.maps), theirs.detach()[:, 0])


def test_cam_is_the_textbook_formula(small_cnn):
    x = torch.randn(3, 3, 32, 32)
    with ModelHooks(small_cnn) as hooks:
        result = get_method("cam")(hooks, "features.5")(x, [[0, 5], [2], [9, 1, 3]])
        gradcam = get_method("gradcam")(hooks, "features.5")(x, [[0, 5], [2], [9, 1, 3]])
    with torch.no_grad():
        features = small_cnn.features(x)
    weight = small_cnn.fc.weight.detach()
    for i, targets in enumerate(result.targets):
        for j, c in enumerate(targets):
            expected = (weight[c][:, None, None] * features[i]).sum(dim=0)  # M_c = sum_k w_k^c f_k
            torch.testing.assert_close(result.maps[i][j], expected)
            # With a GAP + linear head, Grad-CAM is ReLU(CAM) / (h * w).
            area = features.shape[-1] * features.shape[-2]
            torch.testing.assert_close(gradcam.maps[i][j], expected.relu() / area)


def test_cam_refuses_heads_that_are_not_gap_plus_linear(resnet18):
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None).eval()
    with (
        ModelHooks(alexnet) as hooks,
        pytest.raises(MethodNotApplicableError, match="global-average"),
    ):
        get_method("cam")(hooks, "features.11")(torch.randn(1, 3, 224, 224))
    with ModelHooks(resnet18) as hooks, pytest.raises(MethodNotApplicableError, match="channels"):
        get_method("cam")(hooks, "layer3")(torch.randn(1, 3, 64, 64))


def make_method(name: str, hooks: ModelHooks, layer: str):
    """The method ``name`` at ``layer``, or at the input for methods that take no layer."""
    method = get_method(name)
    return method(hooks, layer) if method.needs_layer else method(hooks)


@pytest.mark.parametrize("method", sorted(set(method_names()) - {"cam"}))
def test_a_batch_with_several_targets_equals_one_image_at_a_time(method, small_cnn):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = [[1, 4, 7], [6], [9, 0]]
    with ModelHooks(small_cnn) as hooks:
        explain = make_method(method, hooks, "features.5")
        batched = explain(x, targets)
        for i, image_targets in enumerate(targets):
            single = explain(x[i : i + 1], [image_targets])
            torch.testing.assert_close(batched.maps[i], single.maps[0], rtol=1e-4, atol=1e-6)
    assert batched.targets == targets
    size = 32 if method.startswith("guided") else 16  # pixel-level maps have the input's size
    assert [m.shape for m in batched.maps] == [(len(t), size, size) for t in targets]


@pytest.mark.parametrize("method", method_names())
def test_no_gradients_are_written_and_train_flags_are_restored(method, small_cnn):
    small_cnn.train()
    small_cnn.features[4].eval()  # a mixed state the caller chose
    small_cnn.requires_grad_(True)
    flags = {name: m.training for name, m in small_cnn.named_modules()}
    x = torch.randn(2, 3, 32, 32)
    with ModelHooks(small_cnn) as hooks:
        explain = make_method(method, hooks, "features.5")
        result = explain(x, [3, 8])
        assert all(m.shape[0] == 1 for m in result.maps)
        assert all(p.grad is None for p in small_cnn.parameters())
        assert {name: m.training for name, m in small_cnn.named_modules()} == flags
        with pytest.raises(TargetOutOfRangeError):
            explain(x, [3, 10])
        assert {name: m.training for name, m in small_cnn.named_modules()} == flags
    assert all(p.grad is None for p in small_cnn.parameters())
    assert torch.is_grad_enabled()


def test_top1_is_the_default_target(small_cnn):
    x = torch.randn(4, 3, 32, 32)
    with ModelHooks(small_cnn) as hooks:
        result = get_method("gradcam")(hooks, "features.5")(x)
    assert result.targets == [[int(i)] for i in small_cnn(x).argmax(dim=1)]


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'gradcam\+\+\+'.*gradcam\+\+"):
        get_method("gradcam+++")


def test_upsample_maps_to_input_size():
    maps = torch.zeros(2, 3, 7, 7)
    maps[..., 3, 3] = 1.0
    up = upsample_maps(maps, (224, 224))
    assert up.shape == (2, 3, 224, 224)
    peak = divmod(int(up[0, 0].argmax()), 224)
    assert all(96 <= p <= 128 for p in peak)


def test_normalize_maps_divides_by_the_max_and_keeps_zero_maps_zero():
    maps = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[-3.0, -1.0], [0.0, 0.0]]])
    normalised = normalize_maps(maps)
    torch.testing.assert_close(normalised[0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    assert torch.equal(normalised[1], torch.zeros(2, 2))


def test_targets_mix_indices_lists_and_top1(small_cnn):
    x = torch.randn(3, 3, 32, 32)
    with ModelHooks(small_cnn) as hooks:
        result = get_method("gradcam")(hooks, "features.5")(x, [4, None, [2, 3]])
    assert result.targets == [[4], [int(small_cnn(x[1:2]).argmax())], [2, 3]]
    with (
        ModelHooks(small_cnn) as hooks,
        pytest.raises(ValueError, match="2 entries for a batch of 3"),
    ):
        get_method("gradcam")(hooks, "features.5")(x, [1, 2])


def test_scorecam_channel_limit_scores_the_strongest_channels(resnet18):
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with ModelHooks(resnet18) as hooks:
        full = normalize_maps(get_method("scorecam")(hooks, "layer4")(x, [5]).maps[0])
        calls: list[int] = []
        handle = resnet18.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
        limited = {
            k: normalize_maps(
                get_method("scorecam")(hooks, "layer4", max_channels=k)(x, [5]).maps[0]
            )
            for k in (128, 384)
        }
        handle.remove()
    assert calls[:2] == [1, 8] and sum(calls) == 2 + 128 + 384  # capture pass + one per channel
    error = {k: float((limited[k] - full).abs().max()) for k in (128, 384)}
    assert error[384] < error[128] and error[384] < 0.1, error
    with pytest.raises(ValueError, match="max_channels"):
        get_method("scorecam")(ModelHooks(resnet18), "layer4", max_channels=0)

"""Transformers: spatial views of their outputs, default layers, and every CAM method against
pytorch-grad-cam with the reshape written by hand, on torchvision's vit_b_16, swin_t and maxvit_t.

Models: ``weights=None``, seed 0, inputs of 224 x 224 (their native size), a batch of two images with
a different target each. torchvision initialises ViT's classifier to zeros, which makes every logit 0
and every map blank, so the ViT's head is drawn again from N(0, 0.02^2) (the other weights are
untouched). Maps are compared at the layer's resolution after ReLU: max abs difference of the maps
normalised by their maximum <= 1e-4 (and the raw maps within 1e-4 of the reference's peak).

``nn.MultiheadAttention`` (in the ViT) takes a fused fast path when gradients are off, as they are
in our capture up to the explained layer, and that path rounds differently: the ViT's ln_1
activations then differ from a gradient-recording forward's by up to 2.4e-6. XGrad-CAM divides by
channel sums that cancel to near zero on those signed activations and turns that into 1.6e-4 between
the two maps, so the ViT comparisons run both sides with the fast path switched off (identical
activations; XGrad-CAM's difference is then 2.4e-5, the reference's own float32 rounding).

Score-CAM runs one forward pass per channel (768 at a ViT's ln_1): both sides score only the 8
channels with the highest mean activation per image (ours through ``max_channels``, the reference
through a reshape that picks the same channels), so what is compared is Score-CAM restricted to those
channels, not the full method.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain.errors import MethodNotApplicableError
from explain.featuremaps import capture_feature_maps
from explain.hooks import ModelHooks
from explain.layers import inspect_layers
from explain.methods import get_method
from explain.models import get_entry
from explain.views import SpatialView, spatial_view
from tests.explain.test_methods import assert_maps_match

SCORECAM_CHANNELS = 8
GRADIENT_ORACLES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "hirescam": pgc.HiResCAM,
    "eigencam": pgc.EigenCAM,
}


def vit_tokens(tensor: torch.Tensor) -> torch.Tensor:
    """(N, 1 + 14 * 14, C) -> (N, C, 14, 14): drop the class token, patches are row-major."""
    patches = tensor[:, 1:, :]
    return patches.reshape(len(tensor), 14, 14, tensor.shape[-1]).permute(0, 3, 1, 2)


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) -> (N, C, H, W)."""
    return tensor.permute(0, 3, 1, 2)


CASES = {
    # name: (layer, reshape written by hand or None for (N, C, H, W) maps, two targets)
    "vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", vit_tokens, [3, 417]),
    "swin_t": ("norm", channels_last, [7, 281]),
    "maxvit_t": ("blocks.3", None, [629, 0]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def transformer(request):
    torch.manual_seed(0)
    model = torchvision.models.get_model(request.param, weights=None).eval()
    if request.param == "vit_b_16":
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return request.param, model, x


@pytest.fixture(autouse=True)
def one_attention_path():
    """Both sides through the same attention kernels (see the module docstring)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(enabled)


def reference_inputs(model, layer, reshape, x, targets):
    """One pytorch-grad-cam forward and backward: the activations and gradients after the reshape."""
    cam = pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        outputs = cam.activations_and_grads(x)
        model.zero_grad()
        wanted = [ClassifierOutputTarget(t) for t in targets]
        sum(target(output) for target, output in zip(wanted, outputs, strict=True)).backward()
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return activations, grads, wanted


def reference_maps(oracle, model, layer, reshape, x, wanted, activations, grads) -> torch.Tensor:
    cam = oracle(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        raw = cam.get_cam_image(x, layer, wanted, activations, grads, False)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.asarray(raw, dtype=np.float32))


def test_every_method_matches_pytorch_grad_cam(transformer):
    name, model, x = transformer
    layer, reshape, targets = CASES[name]
    module = model.get_submodule(layer)
    activations, grads, wanted = reference_inputs(model, module, reshape, x, targets)
    with ModelHooks(model) as hooks:
        for method, oracle in GRADIENT_ORACLES.items():
            ours = torch.cat(get_method(method)(hooks, layer)(x, targets).maps)
            theirs = reference_maps(oracle, model, module, reshape, x, wanted, activations, grads)
            if method == "eigencam":  # a principal component's sign is arbitrary
                theirs = theirs * torch.sign((ours * theirs).sum(dim=(1, 2)))[:, None, None]
            assert (
                ours.shape == theirs.shape == (2, 7 if name != "vit_b_16" else 14, *ours.shape[2:])
            )
            assert_maps_match(ours, theirs)


def strongest_channels(reshape, k: int):
    """A reshape that also keeps each image's ``k`` channels of highest mean activation."""

    def transform(tensor: torch.Tensor) -> torch.Tensor:
        maps = reshape(tensor) if reshape is not None else tensor
        chosen = maps.mean(dim=(2, 3)).topk(k).indices
        return maps.gather(1, chosen[:, :, None, None].expand(-1, -1, *maps.shape[2:]))

    return transform


def reference_scorecam(model, layer: str, reshape, x, targets) -> torch.Tensor:
    """pytorch-grad-cam's Score-CAM maps over each image's strongest channels."""
    module = model.get_submodule(layer)
    transform = strongest_channels(reshape, SCORECAM_CHANNELS)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, out: captured.append(transform(out)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    wanted = [ClassifierOutputTarget(t) for t in targets]
    activations = captured[0].numpy()
    return reference_maps(pgc.ScoreCAM, model, module, transform, x, wanted, activations, None)


def test_scorecam_on_the_strongest_channels_matches_pytorch_grad_cam(transformer):
    name, model, x = transformer
    layer, reshape, targets = CASES[name]
    with ModelHooks(model) as hooks:
        method = get_method("scorecam")(hooks, layer, max_channels=SCORECAM_CHANNELS)
        ours = torch.cat(method(x, targets).maps)
    assert_maps_match(ours, reference_scorecam(model, layer, reshape, x, targets))


def test_token_layers_are_listed_as_spatial_maps_with_defaults(transformer):
    name, model, x = transformer
    table = inspect_layers(model, x[:1])
    entry = get_entry(name)
    target = entry.target_layer(model, table)
    features = entry.feature_layers(model, table)
    assert all(layer in table.spatial_names for layer in (*target, *features))
    info = table.check(target[0], spatial=True)
    if name == "vit_b_16":
        assert target == ["encoder.layers.encoder_layer_11.ln_1"]
        assert features == ["conv_proj"] + [
            f"encoder.layers.encoder_layer_{i}" for i in (2, 5, 8, 11)
        ]
        assert info.output_shape == (197, 768) and info.map_shape == (768, 14, 14)
        assert info.view == SpatialView("tokens", 768, 14, 14, extra_tokens=1)
    elif name == "swin_t":
        assert target == ["norm"] and features == [f"features.{i}" for i in (0, 1, 3, 5, 7)]
        assert info.output_shape == (7, 7, 768) and info.view.layout == "hwc"
        assert table.layers["features.1.0.mlp.0"].map_shape == (384, 56, 56)
    else:
        assert target == ["blocks.3"] and info.view.layout == "chw"
        # Window-partitioned attention tensors (windows, tokens, C) are not maps.
        partitioned = table.layers["blocks.0.layers.0.layers.window_attention.attn_layer.0"]
        assert partitioned.output_shape == (64, 49, 64) and not partitioned.spatial
    with ModelHooks(model) as hooks:
        maps = capture_feature_maps(hooks, x, features).maps
        with torch.no_grad(), hooks.capture(features) as capture:
            model(x)
            raw = {layer: capture.output(layer) for layer in features}
    for layer in features:
        expected = table.layers[layer].view(raw[layer])
        assert maps[layer].shape == (2, *table.layers[layer].map_shape)
        torch.testing.assert_close(maps[layer], expected)


@pytest.mark.parametrize("transformer", ["vit_b_16"], indirect=True)
def test_vit_patch_tokens_get_no_gradient_after_the_last_attention(transformer):
    # Why the default ViT layer is the last block's ln_1 (see explain/models/zoo.py).
    _, model, x = transformer
    last = "encoder.layers.encoder_layer_11"
    layers = [f"{last}.ln_1", last, f"{last}.ln_2", f"{last}.mlp", "encoder.ln"]
    with ModelHooks(model) as hooks:
        for layer in layers:
            with torch.no_grad(), hooks.capture(grad=layer) as capture:
                logits = model(x)
                tokens = capture.output(layer)
            (grads,) = torch.autograd.grad(logits[0, 3], tokens)
            patches = grads[0, 1:].abs().amax(dim=1)  # per patch token
            if layer.endswith("ln_1"):
                assert (patches > 0).all(), "every patch token reaches the class token"
            else:
                assert (patches == 0).all() and grads[0, 0].abs().amax() > 0, layer


def test_cam_applies_where_the_head_is_gap_and_linear(transformer):
    name, model, x = transformer
    layer, reshape, targets = CASES[name]
    with ModelHooks(model) as hooks:
        if name == "vit_b_16":  # the class token, not a pooled map, feeds the head
            with pytest.raises(MethodNotApplicableError):
                get_method("cam")(hooks, layer)(x, targets)
            return
        if name == "maxvit_t":  # pooling, then LayerNorm, Linear, Tanh, Linear
            with pytest.raises(MethodNotApplicableError):
                get_method("cam")(hooks, layer)(x, targets)
            return
        result = get_method("cam")(hooks, layer)(x, targets)
        with torch.no_grad(), hooks.capture(layer) as capture:
            model(x)
            features = reshape(capture.output(layer))
    for i, target in enumerate(targets):
        expected = torch.einsum("c,chw->hw", model.head.weight[target].detach(), features[i])
        torch.testing.assert_close(result.maps[i][0], expected, rtol=1e-4, atol=1e-5)


# -- views on their own ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "input_size", "expected"),
    [
        ((64, 56, 56), (224, 224), SpatialView("chw", 64, 56, 56)),
        ((2048, 10, 15), (300, 451), SpatialView("chw", 2048, 10, 15)),
        ((512, 1, 1), (224, 224), SpatialView("chw", 512, 1, 1)),
        ((56, 56, 96), (224, 224), SpatialView("hwc", 96, 56, 56)),
        ((7, 7, 768), (224, 224), SpatialView("hwc", 768, 7, 7)),
        ((197, 768), (224, 224), SpatialView("tokens", 768, 14, 14, extra_tokens=1)),
        ((1 + 4 + 256, 384), (224, 224), SpatialView("tokens", 384, 16, 16, extra_tokens=5)),
        ((196, 768), (224, 224), SpatialView("tokens", 768, 14, 14)),
        ((1 + 14 * 20, 64), (224, 320), SpatialView("tokens", 64, 14, 20, extra_tokens=1)),
        ((64, 49, 64), (224, 224), None),  # MaxViT's (windows, tokens, C)
        ((49, 1, 512), (224, 224), None),
        ((1000,), (224, 224), None),
        ((3, 768), (224, 224), None),  # too few tokens for a grid
        ((210, 768), (224, 224), None),  # no square grid after dropping up to 8 tokens
    ],
)
def test_spatial_view_reads_shapes(shape, input_size, expected):
    assert spatial_view(shape, input_size) == expected


def test_token_view_puts_each_patch_at_its_place_and_is_differentiable():
    view = spatial_view((1 + 3 * 4, 2), (6, 8))
    assert view == SpatialView("tokens", 2, 3, 4, extra_tokens=1)
    tokens = torch.zeros(1, 13, 2)
    for row in range(3):
        for col in range(4):
            tokens[0, 1 + row * 4 + col] = torch.tensor([row * 10 + col, -1.0])
    tokens[0, 0] = 99.0  # the class token is dropped
    tokens.requires_grad_()
    maps = view(tokens)
    assert maps[0, 0].tolist() == [[row * 10 + col for col in range(4)] for row in range(3)]
    assert (maps[0, 1] == -1).all()
    (grads,) = torch.autograd.grad((maps[0, 0] * maps[0, 0]).sum(), tokens)
    assert grads[0, 0].abs().sum() == 0 and grads[0, 5, 0] == 2 * tokens[0, 5, 0]
    with pytest.raises(ValueError, match="reads"):
        view(torch.zeros(1, 12, 2))
    with pytest.raises(ValueError, match="input_size"):
        spatial_view((197, 768), (224,))

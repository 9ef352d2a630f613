"""Guided Backpropagation and Guided Grad-CAM: against captum, on in-place and shared ReLUs, on
ReLU6, refusing what they do not define, and isolated from every other call on the model.

Oracles: captum's ``GuidedBackprop`` and ``GuidedGradCam`` (with ``interpolate_mode="bilinear"``,
the paper's upsampling) on resnet18 (``weights=None``: in-place ReLUs, one ReLU module run twice in
each block) and on the small CNN (in-place ReLUs). captum modifies only ``nn.ReLU``, so ReLU6 is
checked against the rule written out as an autograd function.
"""

from __future__ import annotations

import copy
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from explain import hooks as hooks_module
from explain.errors import MethodNotApplicableError, TargetOutOfRangeError
from explain.hooks import ModelHooks
from explain.methods import get_method, normalize_maps
from tests.explain.test_methods import make_method

TOLERANCE = 1e-4


@pytest.fixture(params=["resnet18", "small_cnn"])
def case(request, small_cnn):
    if request.param == "resnet18":
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        return (
            model,
            "layer4",
            torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1)),
        )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return small_cnn, "features.5", x


def captum_attribution(kind: str, model: nn.Module, layer: str, x: torch.Tensor, target):
    from captum.attr import GuidedBackprop, GuidedGradCam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets backward hooks on ReLUs
        if kind == "guided_backprop":
            attribution = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=target)
        else:
            attribution = GuidedGradCam(model, model.get_submodule(layer)).attribute(
                x.clone().requires_grad_(), target=target, interpolate_mode="bilinear"
            )
    model.zero_grad(set_to_none=True)
    return attribution.detach()


def assert_maps_match(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert theirs.amax() > 0, "a reference map that is all zero would prove nothing"
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE * float(theirs.amax()))
    difference = float((normalize_maps(ours) - normalize_maps(theirs)).abs().max())
    assert difference <= TOLERANCE
    return difference


def test_guided_backprop_gradients_equal_captums(case):
    model, _, x = case
    with ModelHooks(model) as hooks:
        gradients, _, targets = get_method("guided_backprop")(hooks).input_gradients(x, [3, 7])
    theirs = captum_attribution("guided_backprop", model, "", x, [3, 7])
    ours = torch.cat(gradients)
    assert targets == [[3], [7]] and ours.shape == theirs.shape == x.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6 * float(theirs.abs().amax()))
    # Guided: never the plain gradient (some ReLU gradient was negative and got clamped).
    plain = x.clone().requires_grad_()
    (vanilla,) = torch.autograd.grad(model(plain)[[0, 1], [3, 7]].sum(), plain)
    assert not torch.allclose(vanilla, theirs)


@pytest.mark.parametrize("method", ["guided_backprop", "guided_gradcam"])
def test_maps_are_captums_magnitude_at_input_resolution(case, method):
    model, layer, x = case
    with torch.no_grad():
        top2 = (
            model(x).topk(2).indices.tolist()
        )  # Grad-CAM of a random model's top classes is not 0
    with ModelHooks(model) as hooks:
        result = make_method(method, hooks, layer)(x, top2)
    assert result.layer == (layer if method == "guided_gradcam" else None)
    for j in range(2):
        ours = torch.stack([maps[j] for maps in result.maps])
        theirs = captum_attribution(method, model, layer, x, [t[j] for t in result.targets])
        assert ours.shape == (2, *x.shape[-2:])
        assert_maps_match(ours, theirs.abs().amax(dim=1))


class SharedReLU6(nn.Module):
    """One ReLU6 module run three times, in place, between convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU6(inplace=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x) * 4)  # scaled so that some inputs clip at 6
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))
        return self.fc(x.mean(dim=(2, 3)))


class GuidedReLU6(torch.autograd.Function):
    """The rule written out: pass a gradient where 0 < x < 6 and it is positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp_min(0) * ((x > 0) & (x < 6))


class Written(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GuidedReLU6.apply(x)


def test_relu6_run_several_times_in_place_follows_the_rule():
    torch.manual_seed(0)
    model = SharedReLU6().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        clipped = model.act(model.conv1(x) * 4)
    assert (clipped == 6).any() and (clipped == 0).any(), "both clips must occur"
    reference = copy.deepcopy(model)
    reference.act = Written()
    pixels = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(reference(pixels)[[0, 1], [2, 4]].sum(), pixels)
    with ModelHooks(model) as hooks:
        gradients, _, _ = get_method("guided_backprop")(hooks).input_gradients(x, [2, 4])
    torch.testing.assert_close(torch.cat(gradients), expected, rtol=0, atol=1e-7)


class WithActivation(nn.Module):
    def __init__(self, activation: nn.Module | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = activation
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.act(x) if self.act is not None else F.relu(x)  # functional: no module to hook
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("activation", [nn.SiLU(), nn.GELU(), nn.Hardswish(), nn.LeakyReLU()])
def test_activations_without_a_guided_rule_are_refused(activation):
    model = WithActivation(activation).eval()
    with ModelHooks(model) as hooks:
        for method in ("guided_backprop", "guided_gradcam"):
            with pytest.raises(MethodNotApplicableError, match=type(activation).__name__):
                get_method(method).check_model(model)
            with pytest.raises(MethodNotApplicableError, match="ReLU and ReLU6"):
                make_method(method, hooks, "conv")


def test_rectifiers_applied_as_functions_are_refused_at_the_call():
    model = WithActivation(None).eval()
    with ModelHooks(model) as hooks:
        explain = get_method("guided_backprop")(hooks)  # no module to object to
        with pytest.raises(MethodNotApplicableError, match="ReluBackward0"):
            explain(torch.randn(1, 3, 8, 8))
        assert hooks_module._ACTIVE.get() == ()


def test_a_layer_is_refused_for_guided_backprop(small_cnn):
    with ModelHooks(small_cnn) as hooks, pytest.raises(ValueError, match="takes no layer"):
        get_method("guided_backprop")(hooks, "features.5")


# -- isolation ------------------------------------------------------------------------------------


def plain_explanations(hooks: ModelHooks, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What a plain request computes: Grad-CAM at layer3 (its gradient crosses layer4's ReLUs) and
    the vanilla input gradient through the model's ReLUs."""
    gradcam = get_method("gradcam")(hooks, "layer3")(x, [3, 7]).maps
    pixels = x.clone().requires_grad_()
    with hooks.capture():
        (vanilla,) = torch.autograd.grad(model(pixels)[[0, 1], [3, 7]].sum(), pixels)
    return [*gradcam, vanilla]


def test_a_guided_call_running_beside_plain_calls_leaves_them_unchanged(resnet18):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with ModelHooks(resnet18) as hooks:
        guided = get_method("guided_gradcam")(hooks, "layer4")
        sequential = plain_explanations(hooks, resnet18, x)
        guided_alone = guided(x, [3, 7]).maps
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        plain_results: list[list[torch.Tensor]] = []
        guided_results: list[list[torch.Tensor]] = []

        def run(work, results) -> None:
            try:
                for _ in range(6):
                    barrier.wait()  # both threads inside their calls at the same time
                    results.append(work())
            except BaseException as error:
                errors.append(error)
                barrier.abort()

        threads = [
            threading.Thread(
                target=run, args=(lambda: plain_explanations(hooks, resnet18, x), plain_results)
            ),
            threading.Thread(target=run, args=(lambda: guided(x, [3, 7]).maps, guided_results)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len(plain_results) == len(guided_results) == 6
    for maps in plain_results:
        for ours, alone in zip(maps, sequential, strict=True):
            torch.testing.assert_close(ours, alone, rtol=1e-5, atol=1e-8)
    for maps in guided_results:
        for ours, alone in zip(maps, guided_alone, strict=True):
            torch.testing.assert_close(ours, alone, rtol=1e-5, atol=1e-8)


def test_no_gradient_modifier_outlives_the_call(resnet18):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    reference = copy.deepcopy(resnet18)  # never hooked
    pixels = x.clone().requires_grad_()
    (vanilla,) = torch.autograd.grad(reference(pixels)[:, 4].sum(), pixels)

    def input_gradient(model: nn.Module) -> torch.Tensor:
        pixels = x.clone().requires_grad_()
        return torch.autograd.grad(model(pixels)[:, 4].sum(), pixels)[0]

    with ModelHooks(resnet18) as hooks:
        explain = get_method("guided_backprop")(hooks)
        hooked = {name: len(m._forward_hooks) for name, m in resnet18.named_modules()}
        explain(x, 4)
        with pytest.raises(TargetOutOfRangeError):
            explain(x, 1000)  # fails after the guided forward pass ran
        assert hooks_module._ACTIVE.get() == ()
        assert {name: len(m._forward_hooks) for name, m in resnet18.named_modules()} == hooked
        assert all(len(m._backward_hooks) == 0 for m in resnet18.modules())
        torch.testing.assert_close(input_gradient(resnet18), vanilla, rtol=0, atol=0)
        with hooks.capture():  # a capture without modifiers: plain gradients too
            torch.testing.assert_close(input_gradient(resnet18), vanilla, rtol=0, atol=0)
    assert all(p.grad is None for p in resnet18.parameters())

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
import torchvision
from torch import nn

from explain.errors import AmbiguousLayerError, UnknownLayerError
from explain.hooks import ModelHooks, find_layer
from explain.layers import inspect_layers


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class SharedActivation(nn.Module):
    """Uses one ReLU module twice, like EfficientNet ports that share their activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x)))).mean(dim=(2, 3))


# -- lifetime -------------------------------------------------------------------------------------


def test_hooks_stay_attached_across_calls_and_are_removed_on_close(small_cnn):
    hooks = ModelHooks(small_cnn)
    attached = hook_count(small_cnn)
    assert attached == 2 * len(hooks.layer_names) > 0
    for _ in range(3):
        with hooks.capture("features.3") as capture:
            small_cnn(torch.randn(1, 3, 16, 16))
            assert capture.output("features.3").shape == (1, 16, 8, 8)
        small_cnn(torch.randn(1, 3, 16, 16))
        assert hook_count(small_cnn) == attached
    hooks.close()
    hooks.close()  # idempotent
    assert hook_count(small_cnn) == 0
    assert not hooks.attached
    with pytest.raises(RuntimeError, match="closed"):
        hooks.capture("features.3")


def test_layers_get_their_hooks_once_when_first_used(small_cnn):
    hooks = ModelHooks(small_cnn, layers=[])
    assert hook_count(small_cnn) == 0
    for _ in range(3):
        with hooks.capture("features.3", inputs="fc") as capture:
            small_cnn(torch.randn(1, 3, 8, 8))
            assert capture.output("features.3").shape == (1, 16, 4, 4)
        assert hooks.layer_names == ["features.3", "fc"]
        assert hook_count(small_cnn) == 4
    hooks.close()
    assert hook_count(small_cnn) == 0
    with pytest.raises(RuntimeError, match="closed"):
        hooks.layer("features.0")


def test_hooks_are_removed_when_the_block_raises(small_cnn):
    with pytest.raises(ZeroDivisionError), ModelHooks(small_cnn) as hooks:
        assert hook_count(small_cnn) > 0
        with hooks.capture("features.0"):
            small_cnn(torch.randn(1, 3, 8, 8))
            1 / 0  # noqa: B018
    assert hook_count(small_cnn) == 0


def test_hooks_are_inert_without_a_capture(small_cnn):
    x = torch.randn(2, 3, 16, 16)
    expected = small_cnn(x)
    hooks = ModelHooks(small_cnn)
    with hooks.capture("features.3") as capture:
        pass
    assert torch.equal(small_cnn(x), expected)
    assert capture.closed


def test_capture_keeps_the_output_before_downstream_in_place_ops():
    # AlexNet's convolutions are followed by ReLU(inplace=True), which overwrites the conv output.
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    expected_conv = model.features[0](x)
    with (
        ModelHooks(model) as hooks,
        torch.no_grad(),
        hooks.capture(["features.0", "features.1"]) as c,
    ):
        model(x)
        conv, relu = c.output("features.0"), c.output("features.1")
    assert conv.min() < 0, "the conv output must not have been rectified in place"
    torch.testing.assert_close(conv, expected_conv.detach())
    torch.testing.assert_close(relu, expected_conv.detach().relu())


def test_capture_records_inputs_through_forward_pre_hooks(small_cnn):
    x = torch.randn(1, 3, 16, 16)
    with ModelHooks(small_cnn) as hooks, hooks.capture(inputs="fc") as capture:
        small_cnn(x)
        (pooled,) = capture.input("fc")
    torch.testing.assert_close(pooled, small_cnn.pool(small_cnn.features(x)).flatten(1).detach())


# -- isolation and retention ----------------------------------------------------------------------


def test_concurrent_captures_in_two_threads_do_not_mix(resnet18):
    hooks = ModelHooks(resnet18)
    inputs = [
        torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)
    ]
    with torch.no_grad():
        expected = [
            resnet18.layer3(
                resnet18.layer2(
                    resnet18.layer1(
                        resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(x))))
                    )
                )
            )
            for x in inputs
        ]
    barrier = threading.Barrier(2)
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(10):
                barrier.wait()  # both threads are inside a capture at the same time
                with torch.no_grad(), hooks.capture("layer3") as capture:
                    resnet18(inputs[i])
                    results[i].append(capture.output("layer3"))
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(2):
        assert len(results[i]) == 10
        for output in results[i]:
            torch.testing.assert_close(output, expected[i])
    hooks.close()


def test_no_tensor_outlives_its_capture(small_cnn):
    hooks = ModelHooks(small_cnn)
    with torch.no_grad(), hooks.capture(["features.3", "features.5"], inputs="fc") as capture:
        small_cnn(torch.randn(1, 3, 16, 16))
        refs = [weakref.ref(capture.output("features.3")), weakref.ref(capture.input("fc")[0])]
    gc.collect()
    assert all(ref() is None for ref in refs)
    with pytest.raises(RuntimeError, match="inside the `with` block"):
        capture.output("features.3")
    hooks.close()


def test_gradient_capture_leaves_no_graph_behind(small_cnn):
    hooks = ModelHooks(small_cnn)
    with torch.no_grad(), hooks.capture(grad="features.5") as capture:
        logits = small_cnn(torch.randn(1, 3, 16, 16))
        activation_ref = weakref.ref(capture.output("features.5"))
    (grads,) = torch.autograd.grad(logits[0, 1], activation_ref())
    del logits, grads
    gc.collect()
    assert activation_ref() is None
    hooks.close()


def test_repeated_captures_do_not_accumulate(small_cnn):
    hooks = ModelHooks(small_cnn)
    for _ in range(5):
        with torch.no_grad(), hooks.capture("features.3") as capture:
            small_cnn(torch.randn(1, 3, 16, 16))
        assert capture.calls == {"features.3": 1}  # counted per capture, never accumulated
    assert all(len(m._forward_hooks) == 1 for m in small_cnn.modules() if m is not small_cnn)
    hooks.close()


# -- gradients ------------------------------------------------------------------------------------


def test_tensor_hook_doubling_example():
    # The classic example: y = (w + x) * (w + 1); dy/dw = 5; the hook doubles in place, returns x3.
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    y = torch.mul(torch.add(w, x), torch.add(w, 1))

    def grad_hook(grad: torch.Tensor) -> torch.Tensor:
        grad *= 2
        return grad * 3

    handle = w.register_hook(grad_hook)
    y.backward()
    handle.remove()
    assert w.grad.tolist() == [30.0]
    assert x.grad.tolist() == [2.0]


def test_hook_on_a_captured_activation_modifies_the_gradient_upstream(small_cnn):
    small_cnn.requires_grad_(True)
    x = torch.randn(2, 3, 16, 16)
    conv = small_cnn.features[0]

    def first_conv_grad(double: bool) -> torch.Tensor:
        with ModelHooks(small_cnn) as hooks, hooks.capture(grad="features.3") as capture:
            logits = small_cnn(x)
            if double:
                capture.output("features.3").register_hook(lambda g: g * 2)
            (grad,) = torch.autograd.grad(logits[:, 2].sum(), conv.weight)
        return grad

    torch.testing.assert_close(first_conv_grad(double=True), 2 * first_conv_grad(double=False))


def test_gradient_capture_under_no_grad_differentiates_only_downstream(small_cnn):
    small_cnn.requires_grad_(True)
    with ModelHooks(small_cnn) as hooks:
        with torch.no_grad(), hooks.capture(grad="features.3") as capture:
            logits = small_cnn(torch.randn(1, 3, 16, 16))
            activation = capture.output("features.3")
            assert torch.is_grad_enabled()  # switched on at the captured layer
    assert torch.is_grad_enabled()
    assert activation.requires_grad and activation.grad_fn is None  # a leaf: nothing upstream
    (grad,) = torch.autograd.grad(logits[0, 0], activation)
    assert grad.shape == activation.shape
    assert all(p.grad is None for p in small_cnn.parameters())


def test_gradient_capture_restores_grad_mode(small_cnn):
    with ModelHooks(small_cnn) as hooks, torch.no_grad():
        with hooks.capture(grad="features.3"):
            small_cnn(torch.randn(1, 3, 8, 8))
        assert not torch.is_grad_enabled()


def test_gradient_capture_refuses_inference_mode(small_cnn):
    with ModelHooks(small_cnn) as hooks, torch.inference_mode(), hooks.capture(grad="features.3"):
        with pytest.raises(RuntimeError, match="inference_mode"):
            small_cnn(torch.randn(1, 3, 8, 8))


def test_backward_hook_works_before_an_in_place_relu():
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    seen: list[torch.Tensor] = []

    def double(module: nn.Module, grad_output: torch.Tensor) -> torch.Tensor:
        seen.append(grad_output)
        return grad_output * 2

    x = torch.randn(1, 3, 224, 224, requires_grad=True)

    def input_grad(hooks: ModelHooks) -> torch.Tensor:
        with hooks.capture():
            out = model(x)
            (grad,) = torch.autograd.grad(out[0, 7], x)
        return grad

    with ModelHooks(model) as hooks:
        plain = input_grad(hooks)
        handle = hooks.add_backward_hook("features.0", double)
        doubled = input_grad(hooks)
        assert len(seen) == 1 and seen[0].shape == (1, 64, 55, 55)
        # The gradient reaching the conv output is masked by the in-place ReLU that follows it.
        assert (seen[0] == 0).any()
        torch.testing.assert_close(doubled, 2 * plain)
        model(x)  # no capture: the hook stays quiet
        assert len(seen) == 1
        handle.remove()
        handle.remove()
        torch.testing.assert_close(input_grad(hooks), plain)
        assert len(seen) == 1


# -- lookup ---------------------------------------------------------------------------------------


def test_unknown_layer_lists_close_matches(resnet18):
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'layer5'; did you mean: layer.*"):
        find_layer(resnet18, "layer5")
    with ModelHooks(resnet18) as hooks, pytest.raises(UnknownLayerError, match=r"layer4\.1\.conv2"):
        hooks.capture("layer4.1.cov2")
    assert find_layer(resnet18, "layer4.1.conv2") is resnet18.layer4[1].conv2


def test_a_module_that_runs_twice_is_ambiguous():
    model = SharedActivation()
    with ModelHooks(model) as hooks:
        table = inspect_layers(model, torch.randn(1, 3, 8, 8))
        assert table.ambiguous == {"act"}
        assert "act" not in table.layers and "conv2" in table.layers
        with pytest.raises(AmbiguousLayerError, match="ran 2 times"):
            with hooks.capture("act") as capture:
                model(torch.randn(1, 3, 8, 8))
                capture.output("act")
        with pytest.raises(AmbiguousLayerError, match="more than once"):
            table.check("act")

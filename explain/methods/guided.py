"""Pixel-level methods: Guided Backpropagation and Guided Grad-CAM.

Guided Backpropagation (Springenberg et al., ICLR 2015 workshop) is the gradient of the target logit
with respect to the input pixels, with the backward pass of every rectifier changed: a gradient
passes only where the forward input was positive (the rectifier's own derivative) *and* the gradient
arriving from above is positive. That change is the textbook gradient-modifying hook: a tensor
hook that returns ``grad.clamp_min(0)`` on each rectifier's output. Here it is applied through
:meth:`ModelHooks.capture` (``modify_grad``), so it is active only in the call's own forward pass,
on every run of every rectifier module (in place or not, shared or not), and on nothing else: plain
requests running on the same model at the same time in other threads are untouched.

Which activations:

- ``nn.ReLU``: the rule above.
- ``nn.ReLU6`` (and ``nn.Hardtanh`` with ``min_val=0``): the same rule; the activation's own
  derivative already zeroes the gradient where the forward was clipped (below 0 or above 6), so a
  gradient passes where ``0 < x < 6`` and the gradient from above is positive.
- Smooth or leaky rectifiers (SiLU, GELU, Hardswish, Mish, ELU, CELU, SELU, LeakyReLU, PReLU,
  RReLU, Softplus) and rectifiers applied as functions (``F.relu`` in a ``forward``, where no hook
  can reach them): the method is refused with :class:`MethodNotApplicableError`. The guided rule
  is defined by a rectifier's on/off gate; a smooth activation has no such gate (its derivative is
  neither 0 nor 1 for negative inputs), and leaving it unmodified would mix guided and plain
  gradients into something neither paper defines. Modules are checked when the method is made,
  and the autograd graph of each call is checked for rectifiers that no hook modified.
- Gates and pooling (sigmoid and hard-sigmoid gates, softmax, max-pooling) pass their ordinary
  gradient, as in the paper (which defines the rule for rectifiers only) and in captum.

Guided Grad-CAM (Selvaraju et al., ICCV 2017) multiplies the guided gradient, pixel by pixel, by the
layer's Grad-CAM map (plain gradients, ReLU, not normalised) upsampled bilinearly to the input.

Both yield a gradient image ``(3, H, W)`` per target; the map a method returns is its per-pixel
magnitude, the largest absolute value over the colour channels (the saliency-map convention of
Simonyan et al., 2014), at the input's resolution. :meth:`GuidedBackprop.input_gradients` gives the
signed gradient images themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from explain.errors import MethodNotApplicableError
from explain.hooks import ModelHooks
from explain.methods.base import (
    CAMMethod,
    CAMResult,
    Targets,
    register_method,
    resolve_targets,
    upsample_maps,
)
from explain.methods.gradient import GradCAM

if TYPE_CHECKING:
    from explain.inference import ModelGraphs

__all__ = ["GuidedBackprop", "GuidedGradCAM", "guided_relu_gradient", "rectifier_layers"]

_UNDEFINED = (
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.Softplus,
)
"""Rectifier-like activations for which the guided rule has no defined meaning."""

# Autograd nodes of rectifier-like operations (their names without the ``Backward<n>`` suffix).
# Each one in a call's graph must come from a module whose output the guided hook modified.
_RECTIFIER_NODES = frozenset(
    {
        "Relu",
        "Hardtanh",
        "Threshold",
        "Silu",
        "Gelu",
        "Hardswish",
        "Mish",
        "Elu",
        "Celu",
        "LeakyRelu",
        "Prelu",
        "PreluKernel",
        "RreluWithNoise",
        "Softplus",
    }
)

# What Guided Backpropagation costs, in plain forward passes (inference mode), measured on 2 CPU
# cores (docs/benchmarks.md): the forward pass that records the whole graph, and each backward pass
# to the input (one per class). Measured: 2.34-2.77 for one class (resnet50 and efficientnet_lite0,
# batches of 1 and 8), 1.32-1.64 more per further class; the figures round up.
_RECORDING_FORWARD = 1.2
_BACKWARD_TO_INPUT = 1.7


def guided_relu_gradient(module: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """The guided rule as a gradient hook on a rectifier's output: only positive gradients pass
    (the rectifier's own backward then keeps them only where its forward input was positive)."""
    return grad.clamp_min(0)


def _is_rectifier(module: nn.Module) -> bool:
    if isinstance(module, nn.ReLU):
        return True
    return isinstance(module, nn.Hardtanh) and module.min_val == 0 and module.max_val > 0


def rectifier_layers(model: nn.Module) -> list[str]:
    """The names of the model's rectifier modules (``ReLU``, ``ReLU6``, ``Hardtanh(0, m)``).

    Raises:
        MethodNotApplicableError: the model has an activation for which guided backpropagation is
            not defined (see the module docstring), or a clipping ``Hardtanh`` that is no rectifier.
    """
    names, refused = [], []
    for name, module in model.named_modules():
        if _is_rectifier(module):
            names.append(name)
        elif isinstance(module, (*_UNDEFINED, nn.Hardtanh)):
            refused.append(f"{name} ({type(module).__name__})")
    if refused:
        listed = ", ".join(refused[:3]) + (
            f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        )
        raise MethodNotApplicableError(
            "guided backpropagation is defined for ReLU and ReLU6 rectifiers; this model also has "
            f"{listed}, whose gradient has no guided rule; use a CAM method such as gradcam"
        )
    return names


def _graph_nodes(root: Any) -> Iterator[Any]:
    """Every autograd node reachable from ``root`` (each once)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(parent for parent, _ in node.next_functions)


@register_method
class GuidedBackprop(CAMMethod):
    """Guided Backpropagation: the input gradient with every rectifier's backward pass letting only
    positive gradients through (Springenberg et al., ICLR 2015 workshop).

    The map is the per-pixel largest absolute value over colour channels, at the input's resolution.

    Args:
        hooks: Hooks attached to the model; the rectifier modules get inert forward hooks once.
        layer: Must be ``None``: the method explains at the input.
        graphs: Ignored: every rectifier's gradient is modified, so the whole model runs eagerly.

    Raises:
        MethodNotApplicableError: the model has activations with no guided rule.
    """

    name = "guided_backprop"
    needs_layer = False
    uses_gradients = True

    def __init__(
        self, hooks: ModelHooks, layer: str | None = None, *, graphs: ModelGraphs | None = None
    ) -> None:
        if layer is not None:
            raise ValueError(
                f"guided_backprop explains the input pixels and takes no layer, got {layer!r}"
            )
        self.hooks = hooks
        self.layer = None
        self.graphs = None
        self._modifiers = {name: guided_relu_gradient for name in rectifier_layers(hooks.model)}
        for name in self._modifiers:
            hooks.layer(name)

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        rectifier_layers(model)

    def cost(self, channels: int, targets: int = 1) -> float:
        """A forward pass recording the whole graph, then one backward pass to the input per class."""
        return _RECORDING_FORWARD + _BACKWARD_TO_INPUT * targets

    def explain(self, inputs: torch.Tensor, targets: Targets) -> CAMResult:
        gradients, logits, resolved = self.input_gradients(inputs, targets)
        maps = [image_gradients.abs().amax(dim=1) for image_gradients in gradients]
        return CAMResult(self.name, self.layer, maps, resolved, logits)

    def input_gradients(
        self, inputs: torch.Tensor, targets: Targets
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[list[int]]]:
        """The guided gradients themselves (the model must already be in eval mode).

        Returns:
            One ``(len(targets[i]), 3, H, W)`` tensor per image, the logits (detached) and the
            resolved targets.
        """
        model = self.hooks.model
        pixels = inputs.detach().requires_grad_()
        gradients: list[list[torch.Tensor]] = [[] for _ in range(len(inputs))]
        with torch.enable_grad(), self.hooks.capture(modify_grad=self._modifiers) as capture:
            logits = model(pixels)
            self._check_graph(logits, capture.modified_nodes)
            resolved = resolve_targets(targets, logits)
            rounds = max(len(t) for t in resolved)
            for j in range(rounds):
                rows = [i for i, image_targets in enumerate(resolved) if len(image_targets) > j]
                score = logits[rows, [resolved[i][j] for i in rows]].sum()
                (grads,) = torch.autograd.grad(score, pixels, retain_graph=j < rounds - 1)
                for row in rows:
                    gradients[row].append(grads[row])
        return [torch.stack(g) for g in gradients], logits.detach(), resolved

    def _check_graph(self, logits: torch.Tensor, modified: list[Any]) -> None:
        hooked = {id(node) for node in modified}
        missed = {
            node.name()
            for node in _graph_nodes(logits.grad_fn)
            if node.name().rstrip("0123456789").removesuffix("Backward") in _RECTIFIER_NODES
            and id(node) not in hooked
        }
        if missed:
            raise MethodNotApplicableError(
                "guided backpropagation needs every rectifier to be a ReLU or ReLU6 module; this "
                f"model applies activations no hook can modify ({', '.join(sorted(missed))}, e.g. "
                "F.relu called in a forward method); use a CAM method such as gradcam"
            )


@register_method
class GuidedGradCAM(CAMMethod):
    """Guided Grad-CAM: the guided gradient times the layer's Grad-CAM map upsampled to the input
    (Selvaraju et al., ICCV 2017).

    The map is the per-pixel largest absolute value of that product over colour channels, at the
    input's resolution.

    Args:
        hooks: Hooks attached to the model.
        layer: The Grad-CAM layer.
        graphs: The model's optimised graphs, for the Grad-CAM part (the guided part runs the
            eager model).

    Raises:
        MethodNotApplicableError: the model has activations with no guided rule.
    """

    name = "guided_gradcam"
    uses_gradients = True

    def __init__(self, hooks: ModelHooks, layer: str, *, graphs: ModelGraphs | None = None) -> None:
        super().__init__(hooks, layer, graphs=graphs)
        self._gradcam = GradCAM(hooks, layer, graphs=graphs)
        self._guided = GuidedBackprop(hooks)

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        rectifier_layers(model)

    def cost(self, channels: int, targets: int = 1) -> float:
        """Grad-CAM's forward pass, then Guided Backpropagation's."""
        return self._gradcam.cost(channels, targets) + self._guided.cost(channels, targets)

    def explain(self, inputs: torch.Tensor, targets: Targets) -> CAMResult:
        cams = self._gradcam.explain(inputs, targets)
        gradients, _, _ = self._guided.input_gradients(inputs, cams.targets)
        size = inputs.shape[-2:]
        maps = [
            (image_gradients * upsample_maps(image_cams, size)[:, None]).abs().amax(dim=1)
            for image_gradients, image_cams in zip(gradients, cams.maps, strict=True)
        ]
        return CAMResult(self.name, self.layer, maps, cams.targets, cams.logits)

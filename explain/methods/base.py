"""The part every class-activation-map method shares: capture, targets, gradients, ReLU.

A method is a small class: gradient methods supply channel weights (or a spatial combination) from
activations and gradients; activation methods compute their maps from the activations alone.
Gradients are taken with ``torch.autograd.grad`` of the target logits with respect to the captured
activation only: no ``backward()``, no ``zero_grad()``, nothing written to any ``.grad``, and only the
part of the model after the target layer is recorded by autograd. A layer whose output is a
transformer's tokens or channels-last grid is read through its spatial view
(:mod:`explain.views`), for the activations and their gradients alike.

Pixel-level methods (:mod:`explain.methods.guided`) explain at the input instead of a layer: they
override :meth:`CAMMethod.explain`, and their maps have the input's resolution.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from explain.errors import TargetOutOfRangeError, UnknownMethodError
from explain.hooks import ModelHooks
from explain.layers import eval_mode, spatial_activation
from explain.views import SpatialActivation

if TYPE_CHECKING:
    from explain.inference import LayerSplit, ModelGraphs

__all__ = [
    "CAMMethod",
    "CAMResult",
    "GradientMethod",
    "Targets",
    "get_method",
    "method_names",
    "normalize_maps",
    "register_method",
    "resolve_targets",
    "upsample_maps",
]

Targets = int | Sequence[int | Sequence[int] | None] | None
"""Classes to explain: ``None`` (each image's top-1), one index for every image, or one entry per
image: an index, a list of indices (several explanations), or ``None`` (that image's top-1)."""

_METHODS: dict[str, type[CAMMethod]] = {}


def register_method(cls: type[CAMMethod]) -> type[CAMMethod]:
    """Class decorator: make a method available by its ``name``. Names must be unique."""
    if cls.name in _METHODS:
        raise ValueError(f"a CAM method named {cls.name!r} is already registered")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[CAMMethod]:
    """The method class registered as ``name``.

    Raises:
        UnknownMethodError: no such method (the message lists the valid ones).
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(name, _METHODS) from None


def method_names() -> list[str]:
    return list(_METHODS)


@dataclass(frozen=True)
class CAMResult:
    """Class activation maps for a batch.

    Attributes:
        method: The method's registered name.
        layer: The layer the maps were computed at (``None`` for a method that explains at the
            input alone, such as ``guided_backprop``).
        maps: One tensor per image, ``(len(targets[i]), h, w)`` at the layer's resolution (at the
            input's resolution for pixel-level methods), with ReLU applied if the method's
            definition applies it.
        targets: The class indices explained, per image.
        logits: The model's output for the batch, ``(N, num_classes)``, detached.
    """

    method: str
    layer: str | None
    maps: list[torch.Tensor]
    targets: list[list[int]]
    logits: torch.Tensor


class CAMMethod(ABC):
    """Base class: explains the target logits of a batch at one layer.

    Args:
        hooks: Hooks attached to the model (the method never registers hooks of its own).
        layer: Name of a hooked layer whose output reads as a ``(N, C, h, w)`` map (directly, or
            through the spatial view of a transformer's tokens or channels-last grid).
        graphs: The model's optimised graphs (:class:`~explain.inference.ModelGraphs`): the part
            of the model before ``layer``, and whole forward passes without gradients, run as
            graphs where they can; ``None``: the eager model throughout.

    The model is put in eval mode for the call and every module's flag is restored afterwards.
    """

    name: ClassVar[str]
    uses_gradients: ClassVar[bool] = False
    applies_relu: ClassVar[bool] = True
    class_specific: ClassVar[bool] = True
    """Whether the map depends on the target class (Eigen-CAM's does not)."""
    needs_layer: ClassVar[bool] = True
    """Whether the method explains at a layer (``False``: at the input pixels alone)."""

    def __init__(self, hooks: ModelHooks, layer: str, *, graphs: ModelGraphs | None = None) -> None:
        hooks.layer(layer)
        self.hooks = hooks
        self.layer: str | None = layer
        self.graphs = graphs

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        """Refuse, before any image is read, a model whose structure the method cannot explain.

        Raises:
            MethodNotApplicableError: the method is not defined for this model.
        """
        return None  # a layer method applies to any model; CAM checks its head on each call

    def cost(self, channels: int, targets: int = 1) -> float:
        """What explaining one image costs, in forward passes of the model, for a layer with
        ``channels`` channels and ``targets`` classes: one forward pass, plus whatever the method
        runs on top of it. Gradient methods differentiate only the model's tail after the layer,
        which is small next to the forward pass, once per class; methods that run the model again
        per channel, or differentiate the whole model, override this."""
        return 1.0

    def __call__(self, inputs: torch.Tensor, targets: Targets = None) -> CAMResult:
        """Explain ``targets`` for the batch ``inputs`` (``(N, 3, H, W)``) in one forward pass."""
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
            raise ValueError("inputs must be a (N, C, H, W) tensor")
        with eval_mode(self.hooks.model):
            return self.explain(inputs, targets)

    def explain(self, inputs: torch.Tensor, targets: Targets) -> CAMResult:
        """The call, with the model in eval mode: capture the layer, compute the maps, ReLU."""
        assert self.layer is not None  # layer methods are made with one; not input validation
        model = self.hooks.model
        split = self.split()
        grad_layers = (self.layer,) if self.uses_gradients else ()
        with torch.no_grad(), self.hooks.capture(self.layer, grad=grad_layers) as capture:
            logits = model(inputs) if split is None else split(inputs, self.hooks)
            activation = spatial_activation(capture, self.layer, inputs.shape[-2:])
        resolved = resolve_targets(targets, logits)
        maps = self.compute(inputs, activation, logits, resolved)
        if self.applies_relu:
            maps = [m.relu() for m in maps]
        return CAMResult(self.name, self.layer, maps, resolved, logits.detach())

    def split(self) -> LayerSplit | None:
        """The model cut at the layer, its first part an optimised graph, when :attr:`graphs`
        has one and no capture is open on the hooks here (an outer capture must see every layer
        the eager model runs); ``None``: run the eager model."""
        if self.graphs is None or self.layer is None or self.hooks.capturing:
            return None
        return self.graphs.split(self.layer)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's output without gradients (a method that runs the model again, e.g. on
        masked inputs): the whole model as an optimised graph where :attr:`graphs` has one."""
        if self.graphs is not None:
            return self.graphs.forward(inputs)
        with torch.no_grad():
            return self.hooks.model(inputs)

    def compute(
        self,
        inputs: torch.Tensor,
        activation: SpatialActivation,
        logits: torch.Tensor,
        targets: list[list[int]],
    ) -> list[torch.Tensor]:
        """Maps before ReLU: one ``(len(targets[i]), h, w)`` tensor per image, from the layer's
        ``activation`` (``activation.maps`` is ``(N, C, h, w)``)."""
        raise NotImplementedError(f"{type(self).__name__} must define compute or explain")


class GradientMethod(CAMMethod):
    """A method built from activations ``A`` and the gradients ``dy_c/dA`` of target logits.

    Subclasses define :meth:`channel_weights` (``(n, C)``, for the weighted sum of channels) or
    override :meth:`combine` for methods that weight each position separately.
    """

    uses_gradients = True

    def compute(
        self,
        inputs: torch.Tensor,
        activation: SpatialActivation,
        logits: torch.Tensor,
        targets: list[list[int]],
    ) -> list[torch.Tensor]:
        values = activation.maps
        maps: list[list[torch.Tensor]] = [[] for _ in targets]
        rounds = max(len(t) for t in targets)
        # Images are independent in eval mode, so one gradient call serves every image's j-th target.
        for j in range(rounds):
            rows = [i for i, image_targets in enumerate(targets) if len(image_targets) > j]
            classes = [targets[i][j] for i in rows]
            score = logits[rows, classes].sum()
            grads = activation.gradient(score, retain_graph=j < rounds - 1)
            combined = self.combine(values[rows], grads[rows])
            for row, cam in zip(rows, combined, strict=True):
                maps[row].append(cam)
        return [torch.stack(image_maps) for image_maps in maps]

    def combine(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(n, C, h, w)`` activations and gradients to ``(n, h, w)`` maps."""
        weights = self.channel_weights(activations, grads)
        return torch.einsum("nc,nchw->nhw", weights, activations)

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define channel_weights or combine")


def resolve_targets(targets: Targets, logits: torch.Tensor) -> list[list[int]]:
    """Normalise ``targets`` to a list of class indices per image, validated against ``logits``.

    Raises:
        TargetOutOfRangeError: an index outside ``[0, num_classes)``.
        ValueError: a shape that does not fit the batch.
    """
    batch, num_classes = logits.shape
    if targets is None or isinstance(targets, int):
        items: list[int | Sequence[int] | None] = [targets] * batch
    else:
        items = list(targets)
        if len(items) != batch:
            raise ValueError(f"targets has {len(items)} entries for a batch of {batch} images")
    top1: list[int] = logits.argmax(dim=1).tolist() if any(i is None for i in items) else []
    resolved = [
        [top1[i]] if item is None else [item] if isinstance(item, int) else list(item)
        for i, item in enumerate(items)
    ]
    for image_targets in resolved:
        if not image_targets:
            raise ValueError("every image needs at least one target class")
        for index in image_targets:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"target classes must be int, got {type(index).__name__}")
            if not 0 <= index < num_classes:
                raise TargetOutOfRangeError(f"target class {index} is outside 0..{num_classes - 1}")
    return resolved


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``(..., h, w)`` maps to ``size`` (the input's ``(H, W)``)."""
    if maps.dim() < 2:
        raise ValueError("maps must have at least 2 dimensions (h, w)")
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.reshape(*lead, *size)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each ``(h, w)`` map to ``[0, 1]`` by its maximum after ReLU; all-zero maps stay 0."""
    positive = maps.relu()
    peak = positive.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, positive / peak.clamp_min(torch.finfo(peak.dtype).tiny), 0.0)

"""What a model's layers produce: names, types, output shapes, and which ones can be hooked.

A layer is *spatial* when its output reads as a ``(C, h, w)`` map per image: a convolutional map, or
a transformer's tokens or channels-last grid through a :class:`~explain.views.SpatialView`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from explain.errors import AmbiguousLayerError, LayerNotSpatialError, UnknownLayerError
from explain.hooks import Capture, ModelHooks
from explain.views import SpatialActivation, SpatialView, spatial_view

__all__ = [
    "LayerInfo",
    "LayerTable",
    "eval_mode",
    "inspect_layers",
    "map_of",
    "spatial_activation",
    "spatial_output",
]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore every module's own flag.

    The flags are restored in ``finally``, so an exception inside the block leaves the model as
    the caller had it. A model already in eval mode is left untouched (the common, fast case).
    """
    training = [module for module in model.modules() if module.training]
    if not training:
        yield
        return
    try:
        for module in training:
            module.training = False
        yield
    finally:
        for module in training:
            module.training = True


@dataclass(frozen=True)
class LayerInfo:
    """One hookable layer.

    Attributes:
        name: Dotted module name.
        type: The module's class name.
        output_shape: Output shape for one image (batch dimension dropped), as the module emits it.
        view: How the output reads as a ``(C, h, w)`` map, or ``None`` if it does not.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    view: SpatialView | None = None

    @property
    def spatial(self) -> bool:
        """Whether the output reads as a ``(C, h, w)`` map per image (directly or through a view)."""
        return self.view is not None

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """``(C, h, w)`` of the map the output reads as, or ``None``."""
        return None if self.view is None else self.view.map_shape


@dataclass(frozen=True)
class LayerTable:
    """The layers of a model as seen in one forward pass, in the order they finished.

    Attributes:
        layers: Layers that ran exactly once and returned a tensor: the hookable ones.
        ambiguous: Layers that ran more than once in one pass (shared modules).
    """

    layers: dict[str, LayerInfo]
    ambiguous: frozenset[str]

    def check(self, name: str, *, spatial: bool = False) -> LayerInfo:
        """Return the layer ``name`` if it can be hooked (and is spatial, if asked).

        Raises:
            AmbiguousLayerError: the module runs more than once per forward pass.
            UnknownLayerError: no hookable layer has that name (close matches are listed).
            LayerNotSpatialError: ``spatial`` was asked and the output is not a ``(C, h, w)`` map.
        """
        if name in self.ambiguous:
            raise AmbiguousLayerError(
                f"layer {name!r} runs more than once per forward pass (a shared module), so its "
                "output is not one map; pick a layer listed as hookable"
            )
        info = self.layers.get(name)
        if info is None:
            raise UnknownLayerError(name, self.layers)
        if spatial and not info.spatial:
            raise LayerNotSpatialError(
                f"layer {name!r} outputs shape {list(info.output_shape)} per image, which does not "
                "read as a (C, H, W) map, a channels-last grid or patch tokens"
            )
        return info

    @property
    def spatial_names(self) -> list[str]:
        return [name for name, info in self.layers.items() if info.spatial]


def inspect_layers(model: nn.Module, example: torch.Tensor) -> LayerTable:
    """Run one forward pass on ``example`` and describe every named submodule.

    Hooks go on every module for this one pass and are removed before returning. Each output's
    spatial view is worked out for ``example``'s size (see :func:`~explain.views.spatial_view`).

    Args:
        model: The model to inspect.
        example: An input batch of the model's input size (one image is enough).
    """
    with (
        ModelHooks(model) as hooks,
        torch.no_grad(),
        eval_mode(model),
        hooks.capture(trace=True) as capture,
    ):
        model(example)
        calls, shapes = capture.calls, capture.shapes
    input_size = tuple(example.shape[-2:])
    layers = {
        name: LayerInfo(
            name,
            type(model.get_submodule(name)).__name__,
            shape[1:],
            spatial_view(shape[1:], input_size),
        )
        for name, shape in shapes.items()
        if calls[name] == 1 and shape is not None and len(shape) >= 1
    }
    ambiguous = frozenset(name for name, count in calls.items() if count > 1)
    return LayerTable(layers=layers, ambiguous=ambiguous)


def spatial_activation(
    capture: Capture, layer: str, input_size: tuple[int, int] | torch.Size
) -> SpatialActivation:
    """The output of ``layer`` in ``capture``, with its ``(N, C, h, w)`` map for inputs of
    ``input_size`` (``(H, W)``).

    Raises:
        LayerNotSpatialError: the output does not read as a map.
        AmbiguousLayerError: the layer ran more than once.
    """
    try:
        value = capture.output(layer)
    except TypeError as error:
        raise LayerNotSpatialError(str(error)) from None
    view = spatial_view(value.shape[1:], tuple(input_size)) if value.dim() >= 2 else None
    if view is None:
        raise LayerNotSpatialError(
            f"layer {layer!r} outputs shape {list(value.shape[1:])} per image, which does not read "
            "as a (C, H, W) map, a channels-last grid or patch tokens"
        )
    return SpatialActivation.of(value, view)


def map_of(
    value: torch.Tensor, layer: str, input_size: tuple[int, int] | torch.Size
) -> torch.Tensor:
    """The ``(N, C, h, w)`` map of ``layer``'s output ``value`` for inputs of ``input_size``.

    Raises:
        LayerNotSpatialError: the output does not read as a map.
    """
    view = spatial_view(value.shape[1:], tuple(input_size)) if value.dim() >= 2 else None
    if view is None:
        raise LayerNotSpatialError(
            f"layer {layer!r} outputs shape {list(value.shape[1:])} per image, which does not read "
            "as a (C, H, W) map, a channels-last grid or patch tokens"
        )
    return view(value)


def spatial_output(
    capture: Capture, layer: str, input_size: tuple[int, int] | torch.Size | None = None
) -> torch.Tensor:
    """The ``(N, C, h, w)`` map of ``layer``'s output in ``capture``.

    Args:
        capture: An open capture that recorded ``layer``.
        layer: The layer.
        input_size: ``(H, W)`` of the inputs, to read token and channels-last outputs as maps; without
            it only ``(N, C, h, w)`` outputs are accepted.

    Raises:
        LayerNotSpatialError: the output does not read as a map.
        AmbiguousLayerError: the layer ran more than once.
    """
    if input_size is not None:
        activation = spatial_activation(capture, layer, input_size)
        return activation.view(activation.captured)
    try:
        value = capture.output(layer)
    except TypeError as error:
        raise LayerNotSpatialError(str(error)) from None
    if value.dim() != 4:
        raise LayerNotSpatialError(
            f"layer {layer!r} outputs shape {list(value.shape[1:])} per image, not a (C, H, W) map"
        )
    return value

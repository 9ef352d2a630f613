"""What a model's layers produce: names, types, output shapes, and which ones can be hooked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from explain.errors import AmbiguousLayerError, LayerNotSpatialError, UnknownLayerError
from explain.hooks import Capture, ModelHooks

__all__ = ["LayerInfo", "LayerTable", "eval_mode", "inspect_layers", "spatial_output"]


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
        output_shape: Output shape for one image (batch dimension dropped).
    """

    name: str
    type: str
    output_shape: tuple[int, ...]

    @property
    def spatial(self) -> bool:
        """Whether the output is a ``(C, H, W)`` map per image."""
        return len(self.output_shape) == 3


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
            LayerNotSpatialError: ``spatial`` was asked and the output is not ``(C, H, W)``.
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
                f"layer {name!r} outputs shape {list(info.output_shape)} per image, "
                "not a (C, H, W) map"
            )
        return info

    @property
    def spatial_names(self) -> list[str]:
        return [name for name, info in self.layers.items() if info.spatial]


def inspect_layers(model: nn.Module, example: torch.Tensor) -> LayerTable:
    """Run one forward pass on ``example`` and describe every named submodule.

    Hooks go on every module for this one pass and are removed before returning.

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
    layers = {
        name: LayerInfo(name, type(model.get_submodule(name)).__name__, shape[1:])
        for name, shape in shapes.items()
        if calls[name] == 1 and shape is not None and len(shape) >= 1
    }
    ambiguous = frozenset(name for name, count in calls.items() if count > 1)
    return LayerTable(layers=layers, ambiguous=ambiguous)


def spatial_output(capture: Capture, layer: str) -> torch.Tensor:
    """The ``(N, C, H, W)`` output of ``layer`` in ``capture``.

    Raises:
        LayerNotSpatialError: the output is not a tensor of that shape.
        AmbiguousLayerError: the layer ran more than once.
    """
    try:
        value = capture.output(layer)
    except TypeError as error:
        raise LayerNotSpatialError(str(error)) from None
    if value.dim() != 4:
        raise LayerNotSpatialError(
            f"layer {layer!r} outputs shape {list(value.shape[1:])} per image, not a (C, H, W) map"
        )
    return value

"""The model registry: architectures by name, their weights, preprocessing, labels and layers.

A model is asked for by a *spec*: ``name`` (its default weights), ``name:WEIGHTS`` (a named set of
weights, e.g. ``resnet50:IMAGENET1K_V2``), ``name:none`` (random initialisation) or
``name:/path/to/state_dict.pt`` (``.pt``, ``.pth`` or ``.safetensors``; loaded with
``weights_only=True``). :func:`load_model` turns a spec into a :class:`LoadedModel` whose hooks are
attached once and whose layers have been inspected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from explain.errors import InvalidWeightsError, UnknownModelError
from explain.hooks import ModelHooks
from explain.layers import LayerTable, inspect_layers
from explain.models.labels import Labels
from explain.models.preprocess import Preprocess

__all__ = [
    "LayerRule",
    "LoadedModel",
    "ModelEntry",
    "WeightsRecord",
    "get_entry",
    "load_model",
    "model_names",
    "parse_spec",
    "register_model",
]

StateDict = Mapping[str, torch.Tensor]
LayerRule = Callable[[nn.Module, LayerTable], Sequence[str]]
"""Picks layer names given the built model and its inspected layers."""

_STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors")


@dataclass(frozen=True)
class WeightsRecord:
    """A set of weights and what goes with them.

    Attributes:
        name: The weights' name (``IMAGENET1K_V2``, ``DEFAULT``...).
        preprocess: The preprocessing the weights were trained with.
        labels: Category names by class index.
        load: Returns the state dict; ``None`` for metadata-only records.
    """

    name: str
    preprocess: Preprocess
    labels: Sequence[str]
    load: Callable[[], StateDict] | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    Attributes:
        name: Registry name.
        build: Builds the architecture with random weights.
        weights: ``weights(None)`` is the default record, ``weights(name)`` a named one; raises
            :class:`InvalidWeightsError` (listing the valid names) for an unknown name.
        target_layer: Picks the default CAM layer (the map that feeds the global pooling).
        feature_layers: Picks the layers shown by default as feature maps.
    """

    name: str
    build: Callable[[], nn.Module]
    weights: Callable[[str | None], WeightsRecord]
    target_layer: LayerRule
    feature_layers: LayerRule


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    weights: Callable[[str | None], WeightsRecord],
    target_layer: str | LayerRule | None,
    feature_layers: Sequence[str] | LayerRule,
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register the architecture builder it decorates under ``name``.

    Args:
        name: Registry name; must be new.
        weights: See :attr:`ModelEntry.weights`.
        target_layer: A layer name, ``None`` (no default: methods need an explicit layer), or a rule.
        feature_layers: Layer names or a rule.
    """
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered")

    def decorate(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        _REGISTRY[name] = ModelEntry(
            name=name,
            build=build,
            weights=weights,
            target_layer=_as_rule([] if target_layer is None else target_layer),
            feature_layers=_as_rule(feature_layers),
        )
        return build

    return decorate


def _as_rule(value: str | Sequence[str] | LayerRule) -> LayerRule:
    if callable(value):
        return value
    names = [value] if isinstance(value, str) else list(value)
    return lambda model, table: names


def model_names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry ``name``.

    Raises:
        UnknownModelError: no such model (the message lists close or valid names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, _REGISTRY) from None


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``name[:weights]``; surrounding blanks are ignored.

    Raises:
        ValueError: an empty name or an empty weights part.
    """
    name, sep, weights = spec.strip().partition(":")
    name, weights = name.strip(), weights.strip()
    if not name:
        raise ValueError(f"model spec {spec!r} has no model name")
    if sep and not weights:
        raise ValueError(f"model spec {spec!r} has an empty weights part after ':'")
    return name, weights or None


def _is_path(weights: str) -> bool:
    return "/" in weights or "\\" in weights or weights.lower().endswith(_STATE_DICT_SUFFIXES)


def _load_state_dict_file(path: Path) -> StateDict:
    if not path.is_file():
        raise InvalidWeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except InvalidWeightsError:
        raise
    except Exception as error:  # any unreadable or unsafe file
        raise InvalidWeightsError(f"cannot read weights file {str(path)!r}: {error}") from error
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise InvalidWeightsError(
            f"weights file {str(path)!r} does not hold a state dict of tensors"
        )
    return state


@dataclass(eq=False)
class LoadedModel:
    """A model ready to serve: built, weights loaded, in eval mode with parameters frozen, hooks
    attached once, layers inspected for its input size.

    Attributes:
        name: Registry name.
        spec: The spec it was loaded from.
        model: The module (eval mode, ``requires_grad=False`` on every parameter).
        weights: Name of the weights (``none`` for random initialisation, or the file path).
        pretrained: Whether trained weights were loaded.
        preprocess: The model's preprocessing.
        labels: Category names.
        hooks: The persistent hooks: on the default layers from the start, on any other layer
            from the first request that names it.
        layers: Hookable layers with output shapes, and the ambiguous (shared) ones.
        target_layer: Default CAM layer, or ``None`` when the model has no suitable named module.
        feature_layers: Layers shown by default as feature maps.
    """

    name: str
    spec: str
    model: nn.Module
    weights: str
    pretrained: bool
    preprocess: Preprocess
    labels: Labels
    hooks: ModelHooks
    layers: LayerTable
    target_layer: str | None
    feature_layers: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def architecture(self) -> str:
        return type(self.model).__name__

    def close(self) -> None:
        """Detach the hooks; the model is unusable for explanations afterwards."""
        self.hooks.close()

    def describe(self, *, with_layers: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (what ``GET /models`` shows)."""
        summary: dict[str, Any] = {
            "name": self.name,
            "spec": self.spec,
            "architecture": self.architecture,
            "weights": self.weights,
            "pretrained": self.pretrained,
            "num_classes": self.num_classes,
            "input_size": list(self.preprocess.input_size),
            "resize_size": self.preprocess.resize_size,
            "crop_size": self.preprocess.crop_size,
            "default_layer": self.target_layer,
            "feature_layers": list(self.feature_layers),
        }
        if with_layers:
            summary["layers"] = [
                {
                    "name": info.name,
                    "type": info.type,
                    "output_shape": list(info.output_shape),
                    "spatial": info.spatial,
                    "map_shape": None if info.view is None else list(info.view.map_shape),
                    "layout": None if info.view is None else info.view.layout,
                }
                for info in self.layers.layers.values()
            ]
        return summary


def load_model(spec: str) -> LoadedModel:
    """Build a model from a spec, load its weights, attach hooks and inspect its layers.

    Raises:
        UnknownModelError: unknown name.
        InvalidWeightsError: unknown weights name, unreadable file, or a state dict that does not fit.
    """
    name, weights = parse_spec(spec)
    entry = get_entry(name)
    default = entry.weights(None)
    record, state, label = default, None, default.name
    if weights is None:
        assert default.load is not None  # every default record can load; not user input
        state = default.load()
    elif weights.lower() == "none":
        label = "none"
    elif _is_path(weights):
        state, label = _load_state_dict_file(Path(weights).expanduser()), weights
    else:
        record = entry.weights(weights)
        if record.load is None:
            raise InvalidWeightsError(f"weights {weights!r} of {name!r} cannot be loaded")
        state, label = record.load(), record.name

    model = entry.build()
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise InvalidWeightsError(
                f"weights {label!r} do not fit {name!r}: {str(error).splitlines()[0]}"
            ) from error
    model.eval()
    model.requires_grad_(False)

    example = torch.zeros(1, 3, *record.preprocess.input_size)
    table = inspect_layers(model, example)
    with torch.inference_mode():
        outputs = model(example).shape[-1]
    if outputs != len(record.labels):
        raise InvalidWeightsError(
            f"{name!r} with weights {label!r} has {outputs} outputs but {len(record.labels)} labels"
        )
    spatial = table.spatial_names
    target = [n for n in entry.target_layer(model, table) if n in spatial]
    features = [n for n in entry.feature_layers(model, table) if n in spatial]
    hooks = ModelHooks(model, layers=[*target[:1], *features])
    return LoadedModel(
        name=name,
        spec=spec.strip(),
        model=model,
        weights=label,
        pretrained=state is not None,
        preprocess=record.preprocess,
        labels=Labels(record.labels),
        hooks=hooks,
        layers=table,
        target_layer=target[0] if target else None,
        feature_layers=features,
    )

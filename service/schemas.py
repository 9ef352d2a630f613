"""Request options and response bodies, as pydantic models (they are also the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "NAME_LENGTH",
    "CamValues",
    "ClassScore",
    "CommonOptions",
    "Explanation",
    "Faithfulness",
    "FeatureMap",
    "FeatureMapOptions",
    "FeatureMapResponse",
    "FeatureMapResult",
    "GradCAMOptions",
    "GradCAMResponse",
    "GradCAMResult",
    "LabelList",
    "LayerOut",
    "MethodInfo",
    "MethodList",
    "ModelDetail",
    "ModelInfo",
    "PredictOptions",
    "PredictResponse",
    "PredictResult",
    "Timing",
]


# -- options ----------------------------------------------------------------------------------------

NAME_LENGTH = 200
"""Longest model, layer, method, colour-map name or class label an option may carry."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_LENGTH)]


class CommonOptions(BaseModel):
    """Options every explanation endpoint takes. Unknown options are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_LENGTH,
        description="A loaded model's name (`GET /models`); default: the server's default.",
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        description="How many top classes to return, 1 to the model's number of classes; default 5.",
    )


class PredictOptions(CommonOptions):
    pass


def _split_commas(values: Any) -> Any:
    if isinstance(values, str):
        values = [values]
    if isinstance(values, list):
        return [part.strip() for value in values for part in str(value).split(",") if part.strip()]
    return values


class FeatureMapOptions(CommonOptions):
    layers: list[Name] | None = Field(
        default=None,
        min_length=1,
        description="Layers to show (repeat the parameter or separate with commas), as listed by "
        "`GET /models/{name}`; default: the model's feature stages.",
    )
    max_channels: int = Field(
        default=64,
        ge=1,
        description="Channels (tiles) shown per layer, at most the server's limit "
        "(EXPLAIN_MAX_CHANNELS, 256 by default).",
    )

    _layers = field_validator("layers", mode="before")(_split_commas)


class GradCAMOptions(CommonOptions):
    method: Name = Field(
        default="gradcam",
        description="gradcam, gradcam++, xgradcam, layercam, hirescam, scorecam (the strongest "
        "EXPLAIN_SCORECAM_MAX_CHANNELS channels), eigencam, cam (models whose head is global "
        "average pooling + one linear layer), guided_backprop or guided_gradcam (pixel-level, "
        "models whose activations are ReLU or ReLU6).",
    )
    layer: Name | None = Field(
        default=None,
        description="Target layer; default: the map that feeds the global pooling (for "
        "transformers, see GET /models/{name}). guided_backprop takes none.",
    )
    target: list[Annotated[int, Field(ge=0)] | Name] | None = Field(
        default=None,
        min_length=1,
        description="Class index or label to explain; repeat for several classes, at most the "
        "server's limit (EXPLAIN_MAX_TARGETS, 16 by default). Default: top-1.",
    )
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="Heatmap opacity in the overlay.")
    colormap: Name = Field(default="jet", description="A matplotlib colour map name.")
    return_cam: bool = Field(
        default=False,
        description="Also return the raw map (layer resolution, input resolution for the guided "
        "methods; ReLU, divided by its max).",
    )
    faithfulness: bool = Field(
        default=False,
        description="Also score each map: confidence_change, deletion_auc, insertion_auc (about "
        "33 more forward passes per map).",
    )

    @field_validator("target", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | str) else value


# -- responses ------------------------------------------------------------------------------------


class ClassScore(BaseModel):
    index: int
    label: str
    score: float = Field(description="Softmax probability.")


class Timing(BaseModel):
    decode: float = Field(description="Decoding and preprocessing the images, ms.")
    queue: float = Field(description="Waiting for the model, ms.")
    inference: float = Field(description="The model batch this request ran in, ms.")
    encode: float = Field(description="Rendering PNGs and building results, ms.")
    total: float = Field(description="From the request's arrival to its answer, ms.")


class PredictResult(BaseModel):
    top_k: list[ClassScore]
    warnings: list[str] = Field(default=[], description="How the image was read, when notable.")


class PredictResponse(BaseModel):
    model: str
    results: list[PredictResult] = Field(description="One per image, in request order.")
    timing_ms: Timing


class FeatureMap(BaseModel):
    layer: str
    shape: list[int] = Field(
        description="(C, H, W) of the layer's map (transformer outputs reshaped)."
    )
    channels_shown: int
    png: str = Field(description="Base64 PNG: the channels as a grid of grayscale tiles.")


class FeatureMapResult(PredictResult):
    featuremaps: list[FeatureMap]


class FeatureMapResponse(PredictResponse):
    results: list[FeatureMapResult]


class CamValues(BaseModel):
    shape: list[int]
    values: list[list[float]] = Field(description="Row-major, after ReLU, divided by the maximum.")


class Faithfulness(BaseModel):
    confidence_change: float = Field(
        description="p(image x map) - p(image), softmax probability of the class."
    )
    deletion_auc: float = Field(
        description="Area under p as pixels go to the mean colour, highest map values first, "
        "16 steps; lower is better."
    )
    insertion_auc: float = Field(
        description="Area under p as pixels return into a blurred image, highest map values "
        "first, 16 steps; higher is better."
    )


class Explanation(BaseModel):
    index: int
    label: str
    score: float = Field(description="Softmax probability of the explained class.")
    method: str
    layer: str | None = Field(description="The layer explained; null for guided_backprop.")
    overlay_png: str = Field(
        description="Base64 PNG: the model's view of the image, heatmap over it."
    )
    heatmap_png: str = Field(
        description="Base64 indexed-colour PNG: the heatmap alone; pixel values are the heat "
        "(0-255), the palette is the colour map."
    )
    faithfulness: Faithfulness | None = Field(default=None, description="Only with faithfulness.")
    cam: CamValues | None = Field(default=None, description="Only with return_cam.")


class GradCAMResult(PredictResult):
    explanations: list[Explanation]


class GradCAMResponse(PredictResponse):
    results: list[GradCAMResult]


class ModelInfo(BaseModel):
    name: str
    spec: str
    architecture: str
    weights: str
    pretrained: bool
    num_classes: int
    input_size: list[int] = Field(description="(H, W) of the model's input and of the CAM PNGs.")
    resize_size: int = Field(
        description="The image's shorter side is resized to this many pixels before the crop."
    )
    crop_size: int = Field(
        description="Side of the square centre crop taken after the resize: the part of the "
        "image the model sees."
    )
    default_layer: str | None
    feature_layers: list[str]


class LayerOut(BaseModel):
    name: str
    type: str
    output_shape: list[int]
    spatial: bool = Field(
        description="Whether the output reads as a (C, H, W) map (usable by /featuremaps, /gradcam)."
    )
    map_shape: list[int] | None = Field(
        default=None, description="(C, H, W) of that map: transformer tokens and grids, reshaped."
    )
    layout: str | None = Field(
        default=None,
        description="chw (a map), hwc (a channels-last grid, e.g. Swin) or tokens (e.g. ViT, "
        "class token dropped); null when not spatial.",
    )


class MethodInfo(BaseModel):
    name: str = Field(description="The value of /gradcam's `method` option.")
    class_specific: bool = Field(
        description="Whether the map depends on the target class (Eigen-CAM's does not: every "
        "class gets the same map)."
    )
    cost: float | None = Field(
        description="Forward passes of the model per image at this layer (1 for gradient "
        "methods; Score-CAM: one more per scored channel); null when `unavailable`, or when the "
        "model has no default layer and none was named."
    )
    description: str = Field(description="What the method computes, and its paper.")
    unavailable: str | None = Field(
        default=None,
        description="Why the method cannot be set up for this model, or null. `cam` is also "
        "checked against the model's head when it runs (422 method_not_applicable).",
    )


class ModelDetail(ModelInfo):
    layers: list[LayerOut]
    methods: list[MethodInfo] = Field(
        description="Every CAM method, with its cost at the default layer (`GET "
        "/models/{name}/methods?layer=` for another layer)."
    )


class MethodList(BaseModel):
    model: str
    layer: str | None = Field(description="The layer the costs are for.")
    methods: list[MethodInfo]


class LabelList(BaseModel):
    model: str
    labels: list[str] = Field(description="Class labels by index: `labels[i]` is class i.")

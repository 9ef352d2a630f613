"""What a model batch computes: predictions, feature maps, or class activation maps.

This is the one implementation of the model step, shared by the service's model workers and every
batch engine. A task is a frozen dataclass, so jobs with equal tasks can share one batch. Running a task returns
one :class:`ImageOutput` per image, with everything computed in torch done (maps normalised and
upsampled); colouring and PNG encoding happen later, off the model's thread.

By default the runner uses the optimised inference path (:mod:`explain.inference`): forward
passes without gradients, the part of the model before a CAM's layer, and the default feature
maps run as ONNX Runtime graphs, each checked against the eager model when it is built; the
rest (and everything, where no graph can be built) runs the eager model.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from explain.errors import ExplainError
from explain.faithfulness import Faithfulness, faithfulness_cost, score_maps
from explain.featuremaps import capture_feature_maps
from explain.inference import ModelGraphs
from explain.methods import CAMMethod, get_method, method_names, normalize_maps, upsample_maps
from explain.models import LoadedModel

__all__ = ["CAMTask", "FeatureMapTask", "ImageOutput", "PredictTask", "TaskRunner"]


@dataclass(frozen=True)
class ImageOutput:
    """A model's answer for one image.

    Attributes:
        probabilities: Softmax over the classes, ``(num_classes,)``.
        feature_maps: Layer name to its ``(C, H, W)`` output (feature-map tasks).
        cams: Maps ``(T, h, w)`` at layer resolution (input resolution for pixel-level methods),
            after ReLU, divided by their maximum (CAM tasks).
        heatmaps: The same maps upsampled to the input size, ``(T, H, W)`` (CAM tasks).
        targets: The ``T`` classes the maps explain (CAM tasks).
        faithfulness: The scores of each of the ``T`` heatmaps (CAM tasks that ask for them).
    """

    probabilities: torch.Tensor
    feature_maps: dict[str, torch.Tensor] | None = None
    cams: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    targets: list[int] | None = None
    faithfulness: list[Faithfulness] | None = None


@dataclass(frozen=True)
class PredictTask:
    kind: ClassVar[str] = "predict"


@dataclass(frozen=True)
class FeatureMapTask:
    kind: ClassVar[str] = "featuremaps"
    layers: tuple[str, ...]


@dataclass(frozen=True)
class CAMTask:
    """Class activation maps by ``method`` at ``layer`` (``None`` for methods that explain at the
    input), and with ``faithfulness`` the scores of :mod:`explain.faithfulness` for each map."""

    kind: ClassVar[str] = "gradcam"
    method: str
    layer: str | None
    faithfulness: bool = False


class TaskRunner:
    """Runs tasks on one loaded model; the model worker's ``run`` callable.

    The threads a batch runs on are the calling thread's ``torch.get_num_threads()``, for the
    eager model and the graphs alike: set it per batch (a per-thread setting with torch's OpenMP
    backend) to share the cores between batches running side by side.

    Args:
        loaded: The model.
        method_options: Extra constructor arguments per CAM method name.
        optimize: Use the optimised inference path; ``False``: the eager model throughout.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        method_options: dict[str, dict[str, Any]] | None = None,
        *,
        optimize: bool = True,
    ) -> None:
        self.loaded = loaded
        self._method_options = method_options or {}
        self._methods: dict[tuple[str, str | None], CAMMethod] = {}
        self._lock = threading.Lock()
        self.graphs = (
            ModelGraphs(loaded.model, loaded.hooks, loaded.preprocess.input_size, name=loaded.name)
            if optimize
            else None
        )

    def build_graphs(self) -> None:
        """Build (once) the optimised graphs of the default tasks: the whole model, the default
        feature maps, the part before the default CAM layer. Nothing without ``optimize``."""
        loaded = self.loaded
        if self.graphs is not None:
            self.graphs.full()
            if loaded.feature_layers:
                self.graphs.features(loaded.feature_layers, build=True)
            if loaded.target_layer:
                self.graphs.split(loaded.target_layer)

    def warm_up(self) -> None:
        """Build the optimised graphs of the default tasks (:meth:`build_graphs`), then run every
        kind of task once on a blank batch of two, so the first real call does not pay for
        first-call set-up."""
        loaded = self.loaded
        self.build_graphs()
        example = torch.zeros(2, 3, *loaded.preprocess.input_size)
        self(PredictTask(), example, [None, None])
        if loaded.feature_layers:
            self(FeatureMapTask(tuple(loaded.feature_layers)), example, [None, None])
        if loaded.target_layer:
            self(CAMTask("gradcam", loaded.target_layer), example, [None, None])

    def method(self, name: str, layer: str | None) -> CAMMethod:
        """The method instance for ``(name, layer)``, made once (methods keep no per-call state,
        so the model's worker threads share it). A method that explains at the input
        (``guided_backprop``) ignores ``layer``, so a caller may ask every method at one layer."""
        if not get_method(name).needs_layer:
            layer = None
        key = (name, layer)
        with self._lock:
            if key not in self._methods:
                options = self._method_options.get(name, {})
                self._methods[key] = get_method(name)(
                    self.loaded.hooks, layer, **options, graphs=self.graphs
                )
            return self._methods[key]

    def cost(self, task: Hashable, targets: int = 1) -> float:
        """What ``task`` costs per image explaining ``targets`` classes, in forward passes of the
        model (what a queue that admits work by cost counts): 1 for predictions and feature maps,
        the method's own figure for CAMs, plus the faithfulness scores' when they are asked for.
        """
        if isinstance(task, CAMTask):
            channels = 0
            if task.layer is not None and get_method(task.method).needs_layer:
                info = self.loaded.layers.check(task.layer, spatial=True)
                assert info.map_shape is not None  # checked spatial; not input validation
                channels = info.map_shape[0]
            cost = self.method(task.method, task.layer).cost(channels, targets)
            return cost + (faithfulness_cost(targets) if task.faithfulness else 0.0)
        if isinstance(task, PredictTask | FeatureMapTask):
            return 1.0
        raise TypeError(f"unknown task {task!r}")

    def describe_methods(self, layer: str | None = None) -> list[dict[str, Any]]:
        """Every registered CAM method as it would run at ``layer``: its name, whether its map
        depends on the class, its cost per image in forward passes (:meth:`cost`) and the first
        paragraph of its docstring. A method that cannot be set up for this model says why in
        ``unavailable``.

        Args:
            layer: Where the costs are worked out; default: the model's CAM layer. Without either,
                every ``cost`` is ``None``.

        Raises:
            UnknownLayerError, AmbiguousLayerError, LayerNotSpatialError: a layer that cannot be
                explained.
        """
        layer = layer or self.loaded.target_layer
        if layer is not None:
            self.loaded.layers.check(layer, spatial=True)
        described = []
        for name in method_names():
            method = get_method(name)
            summary = (inspect.getdoc(method) or name).split("\n\n")[0]
            entry: dict[str, Any] = {
                "name": name,
                "class_specific": method.class_specific,
                "cost": None,
                "description": " ".join(summary.split()),
                "unavailable": None,
            }
            if layer is not None:
                try:
                    entry["cost"] = self.cost(CAMTask(name, layer))
                except ExplainError as error:
                    entry["unavailable"] = str(error)
            described.append(entry)
        return described

    def __call__(
        self, task: Hashable, inputs: torch.Tensor, targets: list[list[int] | None]
    ) -> list[ImageOutput]:
        model = self.loaded.model
        if isinstance(task, PredictTask):
            with torch.inference_mode():
                logits = model(inputs) if self.graphs is None else self.graphs.forward(inputs)
                probabilities = logits.softmax(dim=1)
            return [ImageOutput(p) for p in probabilities]
        if isinstance(task, FeatureMapTask):
            captured = capture_feature_maps(
                self.loaded.hooks, inputs, task.layers, graphs=self.graphs
            )
            probabilities = captured.logits.softmax(dim=1)
            return [
                ImageOutput(
                    p, feature_maps={layer: maps[i] for layer, maps in captured.maps.items()}
                )
                for i, p in enumerate(probabilities)
            ]
        if isinstance(task, CAMTask):
            result = self.method(task.method, task.layer)(inputs, targets)
            probabilities = result.logits.softmax(dim=1)
            size = tuple(inputs.shape[-2:])
            cams = [normalize_maps(maps) for maps in result.maps]
            heatmaps = [
                image_cams if image_cams.shape[-2:] == size else upsample_maps(image_cams, size)
                for image_cams in cams
            ]
            scores: list[list[Faithfulness] | None] = [None] * len(inputs)
            if task.faithfulness:
                forward = None if self.graphs is None else self.graphs.forward
                scores = list(
                    score_maps(
                        model, inputs, heatmaps, result.targets, probabilities, forward=forward
                    )
                )
            return [
                ImageOutput(p, cams=c, heatmaps=h, targets=t, faithfulness=f)
                for p, c, h, t, f in zip(
                    probabilities, cams, heatmaps, result.targets, scores, strict=True
                )
            ]
        raise TypeError(f"unknown task {task!r}")

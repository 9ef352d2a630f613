"""How faithful an explanation is to the model: does the model's confidence follow the map?

Three scores per explanation (one image, one class, its map at the input's resolution, values in
``[0, 1]``), all on the class's softmax probability ``p``:

- ``confidence_change``: ``p(image * map) - p(image)``, the image (as the model sees it, after
  normalisation) multiplied pixel by pixel by the map: the quantity behind the Grad-CAM++ paper's
  Average Drop and Increase in Confidence (Chattopadhay et al., WACV 2018), exactly as
  pytorch-grad-cam's ``CamMultImageConfidenceChange`` computes it with a softmax target. Near 0 or
  positive: the map keeps what the model needs. The paper's Average Drop over a set of images is the
  mean of ``max(0, -confidence_change) / score``.
- ``deletion_auc`` (RISE, Petsiuk et al., BMVC 2018): pixels are replaced by the *deletion baseline*
  (zero in the normalised input, i.e. the dataset's mean colour) in order of decreasing map value,
  a ``1 / steps`` share of the pixels per step; the area under ``p`` against the fraction deleted.
  Lower is better: a faithful map removes the evidence first.
- ``insertion_auc`` (RISE): pixels of the image are put back, in the same order, into the
  *insertion baseline*, the image blurred by a Gaussian (kernel 11, sigma 5, as in RISE; reflected
  at the borders); the area under ``p`` against the fraction inserted. Higher is better.

Each curve has ``steps + 1`` points (0 to 100 % in equal steps; :data:`STEPS` = 16 by default) and
its area is the trapezoid rule's, in ``[0, 1]``. Pixels whose map values tie are taken in raster
order. The curves' end points are shared: the deletion curve starts at ``p(image)`` (the
explanation's own forward pass) and ends at ``p(deletion baseline)``; the insertion curve starts at
``p(insertion baseline)`` and ends at ``p(image)``.

Cost per image, in forward passes beyond the explanation's own: 2 (the two baselines, shared by the
image's classes) + ``2 * steps - 1`` per class (the image times the map, ``steps - 1`` inner points
of each curve): 33 for one class with 16 steps. Every perturbed image of a batch (all images, all
classes, both curves) goes through the model in batched forward passes of at most ``batch_size``
images (default :data:`BATCH_SIZE`), under ``torch.inference_mode()``, built one chunk at a time so
memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from explain.layers import eval_mode

__all__ = [
    "BATCH_SIZE",
    "BLUR_KERNEL",
    "BLUR_SIGMA",
    "STEPS",
    "Faithfulness",
    "faithfulness_cost",
    "score_maps",
]

STEPS = 16
"""Steps of the deletion and insertion curves (each has ``STEPS + 1`` points)."""
BATCH_SIZE = 4
"""Perturbed images per forward pass. On 2 CPU cores the time per image is lowest at batches of
1-8 and grows beyond (ms per image at batch 1, 4 and 16: resnet50 56, 62, 79; vit_b_16 234, 198,
230; efficientnet_lite0 at 1, 4 and 32: 24, 19, 36)."""
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


@dataclass(frozen=True)
class Faithfulness:
    """The faithfulness scores of one explanation (see the module docstring).

    Attributes:
        confidence_change: ``p(image * map) - p(image)``.
        deletion_auc: Area under the deletion curve, lower is better.
        insertion_auc: Area under the insertion curve, higher is better.
    """

    confidence_change: float
    deletion_auc: float
    insertion_auc: float

    def as_dict(self, digits: int = 6) -> dict[str, float]:
        return {name: round(value, digits) for name, value in asdict(self).items()}


def faithfulness_cost(targets: int = 1, steps: int = STEPS) -> float:
    """Forward passes per image that scoring ``targets`` explanations of it costs."""
    return 2.0 + targets * (2 * steps - 1)


def _auc(curve: Sequence[float]) -> float:
    """Trapezoid rule over equally spaced points from 0 to 1."""
    return (sum(curve) - (curve[0] + curve[-1]) / 2) / (len(curve) - 1)


def score_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: Sequence[torch.Tensor],
    targets: Sequence[Sequence[int]],
    probabilities: torch.Tensor,
    *,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[list[Faithfulness]]:
    """Score every explanation of a batch.

    Args:
        model: The classifier (run in eval mode, under inference mode).
        inputs: The batch as the model saw it, ``(N, 3, H, W)``.
        maps: Per image, ``(T_i, H, W)`` maps in ``[0, 1]`` at the input's resolution.
        targets: Per image, the ``T_i`` classes the maps explain.
        probabilities: The model's softmax output for ``inputs``, ``(N, num_classes)``.
        steps: Steps of each curve.
        batch_size: Perturbed images per forward pass.
        forward: Runs the model without gradients (e.g.
            :meth:`explain.inference.ModelGraphs.forward`); default: ``model`` in eval mode
            under ``torch.inference_mode()``.

    Returns:
        Per image, one :class:`Faithfulness` per target.

    Raises:
        ValueError: shapes that do not fit together, ``steps`` or ``batch_size`` below 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if inputs.dim() != 4 or not len(inputs) == len(maps) == len(targets) == len(probabilities):
        raise ValueError("inputs (N, C, H, W), maps, targets and probabilities need N entries each")
    size = tuple(inputs.shape[-2:])
    for image_maps, image_targets in zip(maps, targets, strict=True):
        if image_maps.dim() != 3 or tuple(image_maps.shape) != (len(image_targets), *size):
            raise ValueError(
                f"maps of shape {list(image_maps.shape)} for {len(image_targets)} targets and "
                f"inputs of size {list(size)}"
            )
    from torchvision.transforms.v2.functional import gaussian_blur

    inputs, probabilities = inputs.detach(), probabilities.detach()
    with torch.inference_mode():
        blurred = gaussian_blur(inputs, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    pixels = size[0] * size[1]
    counts = [round(step * pixels / steps) for step in range(steps + 1)]

    def perturbed() -> Iterator[tuple[torch.Tensor, list[int]]]:
        """Every image to score, with the classes to read off it, in the order read below."""
        for image_maps, image_targets, image, image_blurred in zip(
            maps, targets, inputs, blurred, strict=True
        ):
            yield torch.zeros_like(image), list(image_targets)
            yield image_blurred, list(image_targets)
            for image_map, target in zip(image_maps, image_targets, strict=True):
                flat = image_map.detach().reshape(-1).float()
                rank = torch.empty(pixels, dtype=torch.long)
                rank[torch.argsort(flat, descending=True, stable=True)] = torch.arange(pixels)
                rank = rank.reshape(size)
                yield image * image_map.to(image.dtype), [target]
                for k in counts[1:-1]:
                    yield torch.where(rank < k, 0.0, image), [target]
                for k in counts[1:-1]:
                    yield torch.where(rank < k, image, image_blurred), [target]

    scores = iter(_probabilities(model, perturbed(), batch_size, forward))
    results: list[list[Faithfulness]] = []
    for image_targets, image_probabilities in zip(targets, probabilities, strict=True):
        zero, blur = next(scores), next(scores)
        image_results = []
        for t, target in enumerate(image_targets):
            original = float(image_probabilities[target])
            multiplied = next(scores)[0]
            deleted = [next(scores)[0] for _ in range(steps - 1)]
            inserted = [next(scores)[0] for _ in range(steps - 1)]
            image_results.append(
                Faithfulness(
                    confidence_change=multiplied - original,
                    deletion_auc=_auc([original, *deleted, zero[t]]),
                    insertion_auc=_auc([blur[t], *inserted, original]),
                )
            )
        results.append(image_results)
    return results


def _probabilities(
    model: nn.Module,
    items: Iterator[tuple[torch.Tensor, list[int]]],
    batch_size: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None,
) -> list[list[float]]:
    """For each ``(image, classes)`` of ``items``, the softmax probabilities of ``classes``, the
    images going through the model ``batch_size`` at a time."""
    scores: list[list[float]] = []
    run = forward or model
    with eval_mode(model), torch.inference_mode():
        while chunk := [item for _, item in zip(range(batch_size), items, strict=False)]:
            probabilities = run(torch.stack([image for image, _ in chunk])).softmax(dim=1)
            scores += [
                row[classes].tolist()
                for row, (_, classes) in zip(probabilities, chunk, strict=True)
            ]
    return scores

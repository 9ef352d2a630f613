"""Faithfulness scores: the Grad-CAM++ confidence change as pytorch-grad-cam computes it, RISE's
deletion and insertion curves on a model whose answer is known, batching and cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from explain.faithfulness import STEPS, faithfulness_cost, score_maps
from explain.hooks import ModelHooks
from explain.methods import get_method, normalize_maps, upsample_maps


class QuadrantTexture(nn.Module):
    """Class 0's logit grows with the texture (pixel-to-pixel differences) of the top-left quadrant
    and nothing else; class 1's logit is 0. Blurring or flattening that quadrant, and only that
    quadrant, takes the evidence away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        quadrant = x[..., :h, :w]
        texture = (quadrant[..., 1:, 1:] - quadrant[..., :-1, 1:]).abs() + (
            quadrant[..., 1:, 1:] - quadrant[..., 1:, :-1]
        ).abs()
        evidence = texture.mean(dim=(1, 2, 3))
        return torch.stack([4 * (evidence - 1), torch.zeros_like(evidence)], dim=1)


def quadrant_map(size: int, top: bool, left: bool) -> torch.Tensor:
    half = size // 2
    cover = torch.zeros(size, size)
    cover[
        (slice(0, half) if top else slice(half, size)),
        (slice(0, half) if left else slice(half, size)),
    ] = 1
    return cover


def test_the_map_over_the_quadrant_the_model_reads_scores_better():
    model = QuadrantTexture()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    probabilities = model(x).softmax(dim=1)
    assert (probabilities[:, 0] > 0.9).all()
    right = quadrant_map(32, top=True, left=True)
    maps = {
        "right": right,
        "opposite": quadrant_map(32, top=False, left=False),
        "beside": quadrant_map(32, top=True, left=False),
        # the right quadrant, but ranked last: every other pixel is worth more
        "inverted": 1 - right,
    }
    scores = {
        name: score_maps(model, x, [m[None]] * 2, [[0], [0]], probabilities)
        for name, m in maps.items()
    }
    for i in range(2):
        right_score = scores["right"][i][0]
        for name in ("opposite", "beside", "inverted"):
            wrong = scores[name][i][0]
            assert right_score.deletion_auc < wrong.deletion_auc - 0.2, (name, right_score, wrong)
            assert right_score.insertion_auc > wrong.insertion_auc + 0.2, (name, right_score, wrong)
        # Keeping only the quadrant keeps the answer; keeping anything else loses it.
        assert right_score.confidence_change == pytest.approx(0.0, abs=1e-6)
        assert scores["opposite"][i][0].confidence_change < -0.5


def test_a_model_that_ignores_its_input_has_flat_curves():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x = torch.randn(1, 3, 8, 8)
    probabilities = model(x).softmax(dim=1).detach()
    (scores,) = score_maps(model, x, [torch.rand(2, 8, 8)], [[1, 3]], probabilities, steps=4)
    for score, target in zip(scores, [1, 3], strict=True):
        p = float(probabilities[0, target])
        assert score.deletion_auc == pytest.approx(p, abs=1e-6)
        assert score.insertion_auc == pytest.approx(p, abs=1e-6)
        assert score.confidence_change == pytest.approx(0.0, abs=1e-6)


@pytest.fixture
def gradcam_case(small_cnn):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with ModelHooks(small_cnn) as hooks:
        result = get_method("gradcam")(hooks, "features.5")(x, [[1, 4], [6], [9, 0]])
    heatmaps = [upsample_maps(normalize_maps(m), (32, 32)) for m in result.maps]
    return small_cnn, x, heatmaps, result.targets, result.logits.softmax(dim=1)


def test_confidence_change_is_pytorch_grad_cams(gradcam_case):
    model, x, heatmaps, targets, probabilities = gradcam_case
    ours = score_maps(model, x, heatmaps, targets, probabilities, steps=2)
    for j in range(2):
        rows = [i for i, t in enumerate(targets) if len(t) > j]
        theirs = CamMultImageConfidenceChange()(
            x[rows],
            np.stack([heatmaps[i][j].numpy() for i in rows]),
            [ClassifierOutputSoftmaxTarget(targets[i][j]) for i in rows],
            model,
        )
        mine = [ours[i][j].confidence_change for i in rows]
        assert np.abs(np.asarray(mine) - theirs).max() <= 1e-6, (mine, theirs)
        assert np.abs(theirs).max() > 1e-3, "a change of 0 everywhere would prove nothing"


def test_batching_and_chunking_do_not_change_the_scores(gradcam_case):
    model, x, heatmaps, targets, probabilities = gradcam_case
    batched = score_maps(model, x, heatmaps, targets, probabilities, batch_size=64)
    chunked = score_maps(model, x, heatmaps, targets, probabilities, batch_size=5)
    for i in range(3):
        (alone,) = score_maps(
            model, x[i : i + 1], heatmaps[i : i + 1], targets[i : i + 1], probabilities[i : i + 1]
        )
        for a, b, c in zip(batched[i], chunked[i], alone, strict=True):
            for field in ("confidence_change", "deletion_auc", "insertion_auc"):
                assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-6)
                assert getattr(a, field) == pytest.approx(getattr(c, field), abs=1e-6)


def test_forward_passes_are_batched_and_counted_by_the_cost(gradcam_case):
    model, x, heatmaps, targets, probabilities = gradcam_case
    batches: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: batches.append(len(args[0])))
    try:
        score_maps(model, x, heatmaps, targets, probabilities, batch_size=32)
    finally:
        handle.remove()
    expected = sum(faithfulness_cost(len(t)) for t in targets)
    assert sum(batches) == expected == 3 * 2 + 5 * (2 * STEPS - 1)  # 3 images, 5 maps
    assert max(batches) == 32 and len(batches) == -(-expected // 32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"maps": [torch.zeros(2, 16, 16)] * 3}, "maps of shape"),
        ({"targets": [[1]]}, "N entries"),
    ],
)
def test_arguments_are_checked(gradcam_case, kwargs, match):
    model, x, heatmaps, targets, probabilities = gradcam_case
    arguments = {"maps": heatmaps, "targets": targets} | kwargs
    with pytest.raises(ValueError, match=match):
        score_maps(model, x, probabilities=probabilities, **arguments)

"""EfficientNet-Lite0 with its real weights on scikit-image's photos."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from explain.methods import get_method, upsample_maps
from explain.models import load_model
from tests.conftest import photo

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    model = load_model("efficientnet_lite0")
    yield model
    model.close()


def explain_one(model, image: Image.Image):
    crop = model.preprocess.crop(image)
    result = get_method("gradcam")(model.hooks, model.target_layer)(
        model.preprocess.normalize(crop)[None]
    )
    heat = upsample_maps(result.maps[0][0], model.preprocess.input_size)
    peak_row, peak_col = divmod(int(heat.argmax()), heat.shape[-1])
    return result.targets[0][0], (peak_row, peak_col)


def test_chelsea_is_a_cat(lite0):
    top1, _ = explain_one(lite0, photo("chelsea"))
    assert top1 in CAT_CLASSES


def test_gradcam_peak_falls_inside_the_cat(lite0):
    # Chelsea (451 x 300) pasted in the bottom-left of a grey 600 x 600 canvas; after the 256 resize
    # and 224 centre crop the cat covers rows 112..224, columns 0..176 of the model's input.
    canvas = Image.new("RGB", (600, 600), (128, 128, 128))
    canvas.paste(photo("chelsea"), (0, 300))
    top1, (row, col) = explain_one(lite0, canvas)
    assert top1 in CAT_CLASSES
    assert 112 <= row < 224 and 0 <= col < 176, (row, col)


def test_gradcam_peak_falls_inside_the_espresso_cup(lite0):
    top1, (row, col) = explain_one(lite0, photo("coffee"))
    assert top1 == ESPRESSO
    assert 0 <= row < 140 and 25 <= col < 195, (row, col)  # the cup, not the saucer or spoon


def test_explaining_a_batch_of_photos_matches_one_at_a_time(lite0):
    images = [photo(name) for name in ("chelsea", "coffee", "rocket")]
    batch = torch.stack([lite0.preprocess(image) for image in images])
    method = get_method("gradcam")(lite0.hooks, lite0.target_layer)
    batched = method(batch, targets=[[282, 285], [967], [657]])
    for i in range(3):
        single = method(batch[i : i + 1], targets=[batched.targets[i]])
        torch.testing.assert_close(batched.maps[i], single.maps[0], rtol=1e-4, atol=1e-5)

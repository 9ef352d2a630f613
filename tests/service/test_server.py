"""The real server: ``python -m service`` in a subprocess, over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.realserver import running
from tests.service.conftest import image_bytes, png_array

CAT_CLASSES = set(range(281, 286))


@pytest.fixture(scope="module")
def server():
    with running({"EXPLAIN_MAX_BATCH_WAIT_MS": "1"}, models=None) as server:
        with httpx.Client(base_url=server.base, timeout=60) as client:
            yield client
        code, output = server.stop(), server.output()
    assert code == 0, output
    assert "Application shutdown complete" in output and "Traceback" not in output, output


def test_real_http_predict_featuremaps_and_gradcam(server):
    photo = image_bytes("chelsea")
    predict = server.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
    assert predict.status_code == 200, predict.text
    assert predict.json()["results"][0]["top_k"][0]["index"] in CAT_CLASSES

    maps = server.post("/featuremaps", files={"image": ("chelsea.jpg", photo, "image/jpeg")})
    assert maps.status_code == 200, maps.text
    layers = maps.json()["results"][0]["featuremaps"]
    assert [m["layer"] for m in layers][-1] == "_head_act"
    assert all(png_array(m["png"]).ndim == 2 for m in layers)

    cam = server.post(
        "/gradcam?target=Egyptian%20cat&return_cam=true",
        content=photo,
        headers={"content-type": "image/jpeg"},
    )
    assert cam.status_code == 200, cam.text
    (explanation,) = cam.json()["results"][0]["explanations"]
    assert explanation["index"] == 285 and explanation["layer"] == "_head_act"
    assert png_array(explanation["overlay_png"]).shape == (224, 224, 3)
    assert server.get("/").status_code == 200
    assert "explain_batch_images_count" in server.get("/metrics").text


def test_unknown_model_fails_fast():
    result = subprocess.run(
        [sys.executable, "-m", "service", "--models", "efficientnet_lite0,resnet5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown model 'resnet5'" in result.stderr and "resnet50" in result.stderr

"""The real server: ``python -m service`` in a subprocess, over real HTTP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.service.conftest import image_bytes, png_array

CAT_CLASSES = set(range(281, 286))


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "EXPLAIN_MAX_BATCH_WAIT_MS": "1"},
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    with httpx.Client(base_url=base, timeout=60) as client:
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield client
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), output
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

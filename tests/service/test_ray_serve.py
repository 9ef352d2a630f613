"""The service on Ray Serve: the same answers as ``python -m service``, readiness, the config
file. The cluster is the session's local one (tests/conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from service import Settings
from service.__main__ import main
from service.state import ServiceState
from tests.conftest import ROOT
from tests.realserver import free_port, stop_process
from tests.service.conftest import image_bytes

CAM_TOLERANCE = 1e-4


def _wait_ready(base: str, process: subprocess.Popen | None, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process is None or process.poll() is None, "the command ended"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, "Serve did not become ready"
        time.sleep(0.2)


def _serve_actors() -> list[str]:
    """The live actors of Serve on the cluster (its controller, proxies and replicas), asked of
    Ray itself, so this process keeps no Serve client of its own."""
    import ray

    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve"
    )


def _replica_states(app: str = "explain") -> dict[str, int]:
    from ray import serve

    applications = serve.status().applications
    if app not in applications:
        return {}
    (deployment,) = applications[app].deployments.values()
    return {str(state): count for state, count in deployment.replica_states.items()}


@contextlib.contextmanager
def serve_command(address: str, replicas: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m service --ray`` on the session's cluster, ready; SIGTERM on the way out."""
    port = free_port()
    output = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
    command = [sys.executable, "-m", "service", "--ray", "--replicas", str(replicas)]
    command += ["--ray-address", address, "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)
        yield f"http://127.0.0.1:{port}", process
    except BaseException:
        output.seek(0)
        print(output.read())
        raise
    finally:
        stop_process(process)
        output.close()


def _pixels(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _same_answers(ours: dict, theirs: dict) -> None:
    assert ours["model"] == theirs["model"] == "efficientnet_lite0"
    for a, b in zip(ours["results"], theirs["results"], strict=True):
        assert [s["index"] for s in a["top_k"]] == [s["index"] for s in b["top_k"]]
        np.testing.assert_allclose(
            [s["score"] for s in a["top_k"]], [s["score"] for s in b["top_k"]], atol=1e-5
        )
        for x, y in zip(a.get("explanations", []), b.get("explanations", []), strict=True):
            assert [x[k] for k in ("index", "label", "method", "layer")] == [
                y[k] for k in ("index", "label", "method", "layer")
            ]
            cams = np.array(x["cam"]["values"]), np.array(y["cam"]["values"])
            assert cams[0].shape == cams[1].shape == (7, 7)
            assert np.abs(cams[0] - cams[1]).max() <= CAM_TOLERANCE
            for picture in ("overlay_png", "heatmap_png"):
                difference = np.abs(_pixels(x[picture]) - _pixels(y[picture]))
                assert difference.shape == (224, 224, 3) and difference.max() <= 1


def test_serve_replicas_answer_like_python_m_service(ray_cluster, service_url):
    photos = {name: image_bytes(name) for name in ("chelsea", "coffee", "rocket")}
    with serve_command(ray_cluster.address, replicas=2) as (base, process):
        replicas = [name for name in _serve_actors() if "#ExplainService#" in name]
        assert len(replicas) == 2
        for endpoint, query in [
            ("/predict", {"top_k": "5"}),
            ("/gradcam", {"return_cam": "true", "target": ["281", "coffee mug"]}),
        ]:
            for name, data in photos.items():
                answers = [
                    httpx.post(
                        f"{url}{endpoint}",
                        params=query,
                        content=data,
                        headers={"Content-Type": "image/jpeg"},
                        timeout=120,
                    )
                    for url in (service_url, base)
                ]
                assert [a.status_code for a in answers] == [200, 200], (name, answers[1].text)
                _same_answers(answers[0].json(), answers[1].json())
        both = httpx.post(  # a batch of two images, multipart
            f"{base}/predict",
            files=[("image", photos["chelsea"]), ("image", photos["coffee"])],
            timeout=120,
        )
        assert [r["top_k"][0]["label"] for r in both.json()["results"]] == [
            "tiger cat",
            "espresso",
        ]
        bad = httpx.post(
            f"{base}/predict", content=b"not an image", headers={"Content-Type": "image/png"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_image"
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    deadline = time.monotonic() + 30
    while left := _serve_actors():  # the command removed its application, and Serve
        assert time.monotonic() < deadline, left
        time.sleep(0.2)


def test_readyz_through_serve_is_200_only_once_a_replica_is_ready(ray_cluster, tmp_path):
    from ray import serve

    from service import ray_serve
    from tests.service.ray_gate import GatedReplica, open_gate

    gates = Path(tempfile.mkdtemp(prefix="gates-", dir=tmp_path))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deployed: Future = Future()
    try:
        target = ray_serve.ExplainService.options(func_or_class=GatedReplica, num_replicas=2)
        application = target.bind(
            {"models": ["efficientnet_lite0"], "log_level": "warning"}, str(gates)
        )

        def deploy() -> None:
            try:
                serve.run(application, name="explain", route_prefix="/")
                deployed.set_result(True)
            except BaseException as error:
                deployed.set_exception(error)

        threading.Thread(target=deploy, daemon=True).start()
        deadline = time.monotonic() + 180
        while len(list(gates.glob("slot-*"))) < 2:  # both replicas are loading their models
            assert time.monotonic() < deadline and not deployed.done()
            time.sleep(0.1)
        answers = []
        for _ in range(8):  # no replica is ready: no 200, whatever Serve answers meanwhile
            try:
                answers.append(httpx.get(f"{base}/readyz", timeout=0.5).status_code)
            except httpx.TimeoutException:
                answers.append("timeout")
        assert 200 not in answers and _replica_states() == {"STARTING": 2}

        open_gate(gates, 1)
        _wait_ready(base, None, timeout=120)
        assert _replica_states() == {"RUNNING": 1, "STARTING": 1}
        for _ in range(10):  # the loading replica takes no request: every answer is a ready one
            ready = httpx.get(f"{base}/readyz", timeout=30)
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            scored = httpx.post(
                f"{base}/predict",
                content=image_bytes("chelsea"),
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            )
            assert scored.status_code == 200, scored.text

        open_gate(gates, 2)
        assert deployed.result(timeout=120)
        assert _replica_states() == {"RUNNING": 2}
    finally:
        for slot in (1, 2):
            open_gate(gates, slot)
        with contextlib.suppress(Exception):
            deployed.result(timeout=120)
        serve.shutdown()


def test_check_health_fails_until_the_models_are_loaded_and_once_stopping():
    from service import ray_serve

    check_health = ray_serve.ExplainService.func_or_class.check_health
    replica = SimpleNamespace(state=None)  # what check_health reads of a replica: no cluster
    with pytest.raises(RuntimeError, match=r"not ready \(starting\)"):
        check_health(replica)
    replica.state = state = ServiceState(Settings(models=["alexnet:none"]))
    state.start()
    try:
        with pytest.raises(RuntimeError, match=r"not ready \(loading\)"):
            check_health(replica)
        deadline = time.monotonic() + 120
        while not state.ready:
            assert time.monotonic() < deadline and state.status != "failed"
            time.sleep(0.05)
        check_health(replica)
        state.begin_shutdown()
        with pytest.raises(RuntimeError, match=r"not ready \(stopping\)"):
            check_health(replica)
    finally:
        state.stop()


def test_the_serve_config_file_deploys_this_app():
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text(encoding="utf-8"))
    )
    (app,) = config.applications
    module, name = app.import_path.split(":")
    assert isinstance(getattr(importlib.import_module(module), name)(app.args), Application)
    (deployment,) = app.deployments
    assert deployment.name == "ExplainService" and deployment.num_replicas == "auto"
    scaling = deployment.autoscaling_config
    assert 1 <= scaling["min_replicas"] <= scaling["initial_replicas"] <= scaling["max_replicas"]
    assert deployment.graceful_shutdown_timeout_s > Settings().shutdown_timeout_s


def test_ray_without_ray_installed_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were missing
    monkeypatch.delitem(sys.modules, "service.ray_serve", raising=False)
    assert main(["--ray", "--models", "alexnet:none"]) == 2
    assert "pip install 'explain-service[ray]'" in capsys.readouterr().err

"""Shutdown and start-up of the real process: SIGTERM with a stalled upload and with a long queue,
and models that fail to load."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from tests.realserver import launch, read_response, running, wait_ready
from tests.service.conftest import b64, image_bytes

SHUTDOWN = {"EXPLAIN_SHUTDOWN_TIMEOUT_S": "4", "EXPLAIN_BATCH_THREADS": "1"}
REQUESTS = 16


def exits_within(server, sent: float, seconds: float) -> tuple[int, float]:
    code = server.process.wait(timeout=seconds + 30)
    return code, time.monotonic() - sent


def test_sigterm_with_a_stalled_upload_answers_503_and_exits_0():
    with running(SHUTDOWN) as server:
        sock = server.connect()
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 1000\r\n\r\nabc"
        )
        time.sleep(0.5)
        sent = server.terminate()
        answer = read_response(sock, 10)
        code, seconds = exits_within(server, sent, 4)
        sock.close()
        output = server.output()
    assert code == 0, output
    assert seconds < 4 + 2, f"exited after {seconds:.1f} s"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:200]
    assert json.loads(body)["error"]["code"] == "shutting_down"
    assert "Traceback" not in output


def test_sigterm_with_a_long_queue_finishes_running_work_and_refuses_the_rest():
    """Score-CAM requests queue behind one running batch; SIGTERM: the running one is answered,
    the queued ones get 503 shutting_down at once, and the process exits 0 within the deadline.
    Enough requests that some still wait after 2 s at the optimised path's pace, few enough
    that the queue takes them all."""
    env = {
        **SHUTDOWN,
        "EXPLAIN_MAX_BATCH_SIZE": "1",
        "EXPLAIN_SCORECAM_MAX_CHANNELS": "64",
        "EXPLAIN_QUEUE_SIZE": "2000",
    }
    with running(env) as server:
        answers: list[tuple[int, str]] = []
        body = {"images": [b64(image_bytes())], "method": "scorecam"}

        async def one(client: httpx.AsyncClient) -> None:
            response = await client.post("/gradcam", json=body)
            answers.append((response.status_code, response.json().get("error", {}).get("code", "")))

        async def clients() -> None:
            async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
                await asyncio.gather(*(one(client) for _ in range(REQUESTS)))

        thread = threading.Thread(target=asyncio.run, args=(clients(),))
        thread.start()
        time.sleep(2.0)
        sent = server.terminate()
        thread.join(60)
        code, seconds = exits_within(server, sent, 4)
        output = server.output()
    assert code == 0, output
    assert seconds < 4 + 2, f"exited after {seconds:.1f} s"
    assert len(answers) == REQUESTS, answers
    assert (200, "") in answers, answers
    assert sum(answer == (503, "shutting_down") for answer in answers) >= 3, answers
    assert {status for status, _ in answers} <= {200, 503}, answers


def test_a_client_that_connects_during_shutdown_gets_503_not_a_refused_connection():
    """While running work finishes, the socket stays open and late clients are told to go
    elsewhere; at the deadline the running request is answered 503 too, and the process exits 0."""
    env = {**SHUTDOWN, "EXPLAIN_SCORECAM_MAX_CHANNELS": "0", "EXPLAIN_QUEUE_SIZE": "5000"}
    with running(env, models="efficientnet_lite0") as server:
        answers: list[httpx.Response] = []
        body = {"images": [b64(image_bytes())], "method": "scorecam"}  # 1,281 forward passes

        def long_request() -> None:
            answers.append(httpx.post(server.base + "/gradcam", json=body, timeout=60))

        thread = threading.Thread(target=long_request)
        thread.start()
        time.sleep(2.5)  # decoded and running: it needs far longer than the 4 s deadline
        sent = server.terminate()
        time.sleep(0.3)
        late = httpx.post(
            server.base + "/predict", content=image_bytes(), headers={"content-type": "image/jpeg"}
        )
        thread.join(60)
        code, seconds = exits_within(server, sent, 4)
        output = server.output()
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down", late.text
    assert late.headers["connection"] == "close" and "retry-after" in late.headers
    assert [a.status_code for a in answers] == [503], answers
    assert answers[0].json()["error"]["code"] == "shutting_down"
    assert code == 0, output
    assert seconds < 4 + 2, f"exited after {seconds:.1f} s"


def test_a_model_that_fails_to_load_ends_the_process_non_zero(tmp_path):
    server = launch({}, models=f"alexnet:none,resnet18:{tmp_path / 'missing.pt'}")
    started = time.monotonic()
    try:
        code = server.process.wait(timeout=60)
        output = server.output()
    finally:
        server.close()
    assert code == 1, output
    assert time.monotonic() - started < 30
    assert "missing.pt" in output and "failed to load" in output


def test_partial_start_keeps_the_other_models_serving(tmp_path):
    env = {"EXPLAIN_ALLOW_PARTIAL_START": "true", "EXPLAIN_LOG_FORMAT": "json"}
    with running(env, models=f"alexnet:none,resnet18:{tmp_path / 'missing.pt'}") as server:
        ready = httpx.get(server.base + "/readyz").json()
        assert ready["status"] == "partial" and ready["models"] == ["alexnet"]
        assert "missing.pt" in ready["failed"]["resnet18"]
        predict = httpx.post(
            server.base + "/predict", content=image_bytes(), headers={"content-type": "image/jpeg"}
        )
        assert predict.status_code == 200
        failed = httpx.post(
            server.base + "/predict?model=resnet18",
            content=image_bytes(),
            headers={"content-type": "image/jpeg"},
        )
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "not_ready"
        time.sleep(0.2)
        lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
        access = [line for line in lines if line["logger"] == "service.access"]
        assert access[-1]["path"] == "/predict" and access[-1]["code"] == "not_ready"
        assert access[-1]["status"] == 503 and access[-1]["client"].startswith("127.0.0.1:")


@pytest.mark.parametrize("signal_name", ["SIGINT"])
def test_sigint_also_exits_0(signal_name):
    import signal

    server = launch(SHUTDOWN)
    try:
        wait_ready(server)
        server.process.send_signal(getattr(signal, signal_name))
        assert server.process.wait(timeout=20) == 0
    finally:
        server.close()

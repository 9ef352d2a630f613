"""The real process against hostile clients: idle and slow connections, malformed HTTP, stalled
uploads, too many sockets, clients that leave. Limits are scaled down so each bound shows fast."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.realserver import closed_within, read_response, running
from tests.service.conftest import b64, image_bytes

MiB = 1024 * 1024

LIMITS = {
    "EXPLAIN_HEADER_TIMEOUT_S": "1.5",
    "EXPLAIN_KEEPALIVE_TIMEOUT_S": "1",
    "EXPLAIN_SEND_TIMEOUT_S": "2",
    "EXPLAIN_BODY_TIMEOUT_S": "3",
    "EXPLAIN_MAX_CONNECTIONS": "40",
    "EXPLAIN_MAX_BODY_BYTES": str(8 * MiB),
    "EXPLAIN_MAX_BODY_BUFFER_BYTES": str(16 * MiB),
    "EXPLAIN_SCORECAM_MAX_CHANNELS": "64",
    "EXPLAIN_BATCH_THREADS": "1",
    "EXPLAIN_MAX_BATCH_SIZE": "1",
    "EXPLAIN_DECODE_BUDGET_BYTES": str(256 * MiB),
}


@pytest.fixture(scope="module")
def server():
    with running(LIMITS) as server:
        yield server


def error_of(response: bytes) -> tuple[int, str, str]:
    """Status, content type and error code of a raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    content_type = next(
        (
            line.split(":", 1)[1].strip()
            for line in lines
            if line.lower().startswith("content-type")
        ),
        "",
    )
    return status, content_type, json.loads(body)["error"]["code"]


def test_an_idle_keep_alive_connection_is_closed_on_time(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        seconds = closed_within(sock, 10)
    assert seconds is not None and 0.5 < seconds < 3.0, seconds


def test_a_silent_connection_is_closed_after_the_header_timeout(server):
    with server.connect() as sock:
        seconds = closed_within(sock, 10)
    assert seconds is not None and seconds < 4.0, seconds


def test_half_sent_headers_get_408_and_the_connection_closes(server):
    started = time.monotonic()
    with server.connect() as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty")
        response = read_response(sock, 10)
    assert time.monotonic() - started < 4.0
    assert error_of(response) == (408, "application/json", "request_timeout")


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            400,
            "invalid_http_request",
        ),
        (
            b"GET /healthz?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (
            b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 70_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
    ],
    ids=["bad content-length", "70 KB URL", "70 KB header"],
)
def test_the_protocol_answers_malformed_requests_in_json(server, request_bytes, status, code):
    with server.connect() as sock:
        sock.sendall(request_bytes)
        assert error_of(read_response(sock)) == (status, "application/json", code)


def test_a_client_that_never_reads_its_answer_is_dropped(server):
    """Feature maps of 24 images (megabytes of JSON) to a client with a tiny receive buffer that
    reads the status line and then nothing: once the socket's buffers are full the server waits
    EXPLAIN_SEND_TIMEOUT_S, then drops the connection and the unsent answer instead of holding
    both forever."""
    image = image_bytes("chelsea")
    body = json.dumps({"images": [b64(image)] * 24, "max_channels": 256}).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /featuremaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        sock.settimeout(60)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        port = sock.getsockname()[1]
        process = psutil.Process(server.process.pid)

        def held() -> bool:
            return any(c.raddr and c.raddr.port == port for c in process.net_connections())

        deadline = time.monotonic() + 60
        while held() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not held(), "the server still holds a client that reads nothing after 60 s"


def test_silent_sockets_cannot_lock_other_clients_out(server):
    """Far more silent sockets than the bound: the oldest idle ones are closed to make room, the
    server never holds more than the bound, and a real client is served at once."""
    sockets = [server.connect() for _ in range(120)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        response = httpx.get(server.base + "/healthz", timeout=5)
        assert response.status_code == 200 and time.monotonic() - started < 2.0
        held = [
            c
            for c in psutil.Process(server.process.pid).net_connections()
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
        ]
        assert len(held) <= 40, len(held)
    finally:
        for sock in sockets:
            sock.close()


def test_stalled_uploads_cannot_pin_memory(server):
    """Twenty 8 MiB uploads that stall one byte short: the bodies being received are bounded
    (16 MiB here), the rest are refused at once, and all are timed out with 408."""
    before = server.rss
    size = 8 * MiB
    sockets = []
    try:
        for _ in range(20):
            sock = server.connect()
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                + f"Content-Length: {size}\r\n\r\n".encode()
            )
            sockets.append(sock)
        chunk = b"\0" * MiB
        for sock in sockets:
            try:
                for _ in range(7):
                    sock.sendall(chunk)
                sock.sendall(chunk[:-1])
            except OSError:
                pass  # refused (503) and closed: the server did not take the rest
        time.sleep(1.0)
        growth = server.rss - before
        assert growth < 64 * MiB, f"RSS grew by {growth / MiB:.0f} MiB"
        answers = [read_response(sock, 6) for sock in sockets]
        codes = sorted(error_of(answer)[2] for answer in answers if answer)
        assert set(codes) <= {"overloaded", "request_timeout"} and "request_timeout" in codes
        assert len(codes) == 20, codes
    finally:
        for sock in sockets:
            sock.close()


def batch_images(server, kind: str) -> float:
    """Images computed so far in batches of ``kind``, from /metrics (0 before the first)."""
    text = httpx.get(server.base + "/metrics").text
    assert "explain_batch_images_sum" in text
    match = re.search(rf'explain_batch_images_sum{{kind="{kind}",model="alexnet"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def test_a_client_that_leaves_cancels_its_work(server):
    """Eight Score-CAM images, and the client gives up after half a second: at most the image
    that was running is computed, never the seven that waited."""
    warm = httpx.post(
        server.base + "/gradcam", content=image_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert warm.status_code == 200
    before = batch_images(server, "gradcam")
    assert before >= 1  # the metric is found, so the count below means something
    body = {"images": [b64(image_bytes())] * 8, "method": "scorecam"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base + "/gradcam", json=body, timeout=0.5)
    time.sleep(0.5)
    # One batch thread, first come first served: this answer comes after whatever still ran.
    after = httpx.post(
        server.base + "/predict",
        content=image_bytes(),
        headers={"content-type": "image/jpeg"},
        timeout=120,
    )
    assert after.status_code == 200
    computed = batch_images(server, "gradcam") - before
    assert computed <= 2, f"{computed} images computed for a client that left"


def png16(side: int) -> bytes:
    """A 16-bit grayscale PNG, small on the wire (a smooth ramp), 10 bytes a pixel to decode."""
    ramp = np.linspace(0, 65535, side, dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(ramp, (side, side)).copy()).save(buffer, "PNG")
    return buffer.getvalue()


class PeakRSS:
    """The server's RSS, sampled every 10 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()


def test_big_16_bit_images_decode_within_the_budget_and_small_requests_pass_them(server):
    """Six 16-bit 4000x4000 PNGs (160 MiB each to decode; the budget is 256 MiB): they decode one
    at a time on their own thread, the server's memory stays within the budget, is handed back
    afterwards, and a small request sent meanwhile is answered first, at once."""
    files = [("image", (f"{i}.png", png16(4000), "image/png")) for i in range(6)]
    small: dict = {}

    def send_small() -> None:
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.post(
            server.base + "/predict", content=image_bytes(), headers={"content-type": "image/jpeg"}
        )
        small.update(
            status=response.status_code, seconds=time.monotonic() - started, done=time.monotonic()
        )

    thread = threading.Thread(target=send_small)
    with PeakRSS(server.process.pid) as rss:
        thread.start()
        started = time.monotonic()
        big = httpx.post(server.base + "/predict", files=files, timeout=120)
        big_done = time.monotonic()
        thread.join()
    assert big.status_code == 200, big.text
    assert small["status"] == 200 and small["done"] < big_done, (small, big_done - started)
    assert small["seconds"] < 3.0, small
    peak = (rss.peak - rss.before) / MiB
    assert peak < 350, f"peak RSS grew by {peak:.0f} MiB"
    time.sleep(0.5)
    kept = (server.rss - rss.before) / MiB
    assert kept < 100, f"RSS stayed {kept:.0f} MiB higher after the request"


def test_one_image_over_the_budget_is_413(server):
    response = httpx.post(
        server.base + "/predict", content=png16(5000), headers={"content-type": "image/png"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "image_too_large"
    assert "MiB" in response.json()["error"]["message"]

"""``python -m service`` in a subprocess on a free loopback port, for the tests that need the real
process: signals, exit codes, sockets, timeouts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RealServer:
    process: subprocess.Popen
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def terminate(self) -> float:
        """SIGTERM; returns the moment it was sent (``time.monotonic``)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        return sent

    def output(self) -> str:
        """What the process wrote, once it has ended (the pipe is then closed)."""
        output, _ = self.process.communicate(timeout=60)
        return output or ""


def launch(env: dict[str, str], models: str = "alexnet:none") -> RealServer:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--models", models],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        text=True,
    )
    return RealServer(process, port)


def wait_ready(server: RealServer, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.process.poll() is None, server.output()  # it ended: say why
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base + "/readyz", timeout=5).status_code == 200:
                return
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)


@contextlib.contextmanager
def running(env: dict[str, str], models: str = "alexnet:none") -> Iterator[RealServer]:
    """A ready server; killed afterwards if a test left it running."""
    server = launch(env, models)
    try:
        wait_ready(server)
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
        if server.process.stdout and not server.process.stdout.closed:
            server.process.communicate(timeout=30)


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closes ``sock``, or None if it is still open after ``timeout``."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started

"""``python -m service`` in a subprocess on a free loopback port, for the tests that need the real
process (signals, exit codes, sockets, timeouts) or a real server (the web page in a browser, the
client, the batch command's http engine)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import httpx
import psutil


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 120.0) -> int:
    """SIGTERM, as an operator stops a server, then SIGKILL if it has not ended within
    ``timeout`` seconds; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class RealServer:
    process: subprocess.Popen
    port: int
    log: IO[str]
    """The process's output (a file: a pipe nobody reads would fill up and block it)."""

    @property
    def base(self) -> str:
        """The server's URL, ``http://127.0.0.1:PORT``."""
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
        """What the process wrote so far."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as an operator stops it, and its exit status once it has ended."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        """Kill the process if it still runs, and release its log."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


def launch(env: dict[str, str], models: str | None = "alexnet:none") -> RealServer:
    """Start the server with ``env`` added to the environment, serving ``models`` (``None``: what
    ``EXPLAIN_MODELS`` in ``env`` or the environment says)."""
    port = free_port()
    log = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
    models_flag = [] if models is None else ["--models", models]
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), *models_flag],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        text=True,
    )
    return RealServer(process, port, log)


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
def running(env: dict[str, str], models: str | None = "alexnet:none") -> Iterator[RealServer]:
    """A ready server; killed afterwards if a test left it running."""
    server = launch(env, models)
    try:
        wait_ready(server)
        yield server
    finally:
        server.close()


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

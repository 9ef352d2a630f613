"""The harness of :mod:`bench.hardening`: a ``python -m service`` process from a source tree, its
RSS sampled in the background, and timed requests against it."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from tests.realserver import free_port

__all__ = ["MB", "ROOT", "Server", "jpeg", "png16", "post", "serving"]

ROOT = Path(__file__).resolve().parent.parent


def jpeg(size: int = 320) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def png16(side: int) -> bytes:
    """A 16-bit grayscale PNG of ``side`` x ``side``, small on the wire (a smooth gradient)."""
    path = Path(f"/tmp/bench-hardening-png16-{side}.png")
    if not path.exists():
        row = np.linspace(0, 65535, side, dtype=np.uint16)
        Image.fromarray(np.broadcast_to(row, (side, side)).copy()).save(path, "PNG")
    return path.read_bytes()


class Server:
    """``python -m service`` from ``source``, its RSS sampled in the background."""

    def __init__(
        self, source: Path, env: dict[str, str] | None = None, nofile: int | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        models = "efficientnet_lite0,alexnet:none"
        environment = {**os.environ, "PYTHONPATH": str(source), **(env or {})}

        def limits() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.log = open(f"/tmp/bench-hardening-{self.port}.log", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(self.port), "--models", models],
            cwd=source,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=limits,
        )
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(self.output())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready")
            time.sleep(0.2)
        self.peak = 0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self._sampling:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.ps.memory_info().rss)
            time.sleep(0.02)

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def reset_peak(self) -> int:
        self.peak = rss = self.rss()
        return rss

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self._sampling = False
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@contextlib.contextmanager
def serving(args: argparse.Namespace, **kwargs) -> Iterator[Server]:
    """A server from ``args.source`` with ``args.env`` (``KEY=VALUE`` strings) in its environment."""
    env = dict(item.split("=", 1) for item in args.env or ())
    server = Server(args.source, env={**env, **kwargs.pop("env", {})}, **kwargs)
    try:
        yield server
    finally:
        server.stop()


MB = 1024 * 1024


def post(server: Server, path: str, timeout: float = 300, **kwargs) -> dict:
    server.reset_peak()
    before = server.rss()
    started = time.monotonic()
    try:
        response = httpx.post(server.base + path, timeout=timeout, **kwargs)
    except httpx.HTTPError as error:
        return {"error": repr(error), "seconds": round(time.monotonic() - started, 2)}
    seconds = time.monotonic() - started
    figures = {
        "status": response.status_code,
        "seconds": round(seconds, 2),
        "answer_bytes": len(response.content),
        "rss_before_mb": round(before / MB),
        "peak_rss_mb": round(server.peak / MB),
        "peak_growth_mb": round((server.peak - before) / MB),
    }
    with contextlib.suppress(ValueError, KeyError, TypeError):
        error = response.json()["error"]
        figures["code"] = error["code"]
        figures["message_chars"] = len(error["message"])
    return figures

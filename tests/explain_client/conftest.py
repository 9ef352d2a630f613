"""A scripted HTTP server in front of the real service: it answers 503, drops connections or
forwards, as a test tells it, and records what it was sent."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest


@dataclass
class Script:
    """What the server does with the next requests (``503``, ``drop``), then ``forward``."""

    upstream: str
    actions: deque[str] = field(default_factory=deque)
    seen: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self) -> str:
        with self.lock:
            return self.actions.popleft() if self.actions else "forward"


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            action = script.next_action()
            with script.lock:
                script.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "action": action,
                        "images": body.count(b'name="image"'),
                    }
                )
            if action == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if action == "503":
                payload = json.dumps(
                    {"error": {"code": "overloaded", "message": "queue full"}}
                ).encode()
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("content-type", "authorization")
            }
            answer = httpx.request(
                self.command,
                script.upstream + self.path,
                content=body,
                headers=headers,
                timeout=120,
            )
            self.send_response(answer.status_code)
            for name in ("content-type", "retry-after"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _answer

    return Handler


@pytest.fixture
def scripted(service_url: str) -> Iterator[tuple[str, Script]]:
    script = Script(service_url)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""The HTTP server: uvicorn, with the connection-level limits a public endpoint needs.

uvicorn's own protocol holds a connection for as long as the client likes until the first request
line arrives, keeps half-sent headers forever, answers malformed requests in plain text, and has
no bound on open connections other than its file descriptors. :class:`GuardedProtocol` adds, per
connection (the settings are uvicorn ``Config``-style limits):

- ``header_timeout_s``: the request line and headers must arrive within it, from the connection's
  start or the request's first byte (else 408 ``request_timeout`` if some of it came, then close);
- ``keepalive_timeout_s``: an idle keep-alive connection is closed (uvicorn's ``timeout_keep_alive``);
- ``send_timeout_s``: a client that reads nothing of an answer for this long (the socket's buffers
  full, writing paused) is disconnected, so the unsent answer is not held in memory for it;
- ``max_header_bytes``: a longer request line plus headers is 431 ``headers_too_large``;
- ``max_connections``: at the bound, the oldest connection without a request being served is closed
  to make room (a silent or half-sent one); if every connection is busy, 503 ``overloaded``;
- a malformed request is a JSON 400 ``invalid_http_request``, like every other error;
- a response sent before its request body has fully arrived closes the connection, so a stalled
  upload cannot hold it.

:class:`GracefulServer` turns SIGTERM/SIGINT into the service's shutdown: take no new work, answer
waiting work with 503 ``shutting_down``, give running batches ``shutdown_timeout_s``, exit 0. While
requests are still being answered it keeps its socket open, so a client that connects meanwhile (a
load balancer that has not yet noticed) gets 503 ``shutting_down`` and retries elsewhere, rather
than a refused connection; once nothing is being answered, or at the deadline, it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.accesslog import log_request
from service.errors import error_body
from service.settings import Settings

__all__ = ["GracefulServer", "GuardedProtocol", "server_config"]

log = logging.getLogger("service")


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/idle timeouts, a header size limit, a bound on
    open connections and JSON error bodies. Limits come from :attr:`settings`, set by
    :func:`server_config`."""

    settings: ClassVar[Settings]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.opened = time.monotonic()
        self.header_bytes = 0
        self.in_headers = False
        self.oversized = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.settings.max_connections and not self._make_room():
            self.connections.discard(self)
            self._refuse(503, "overloaded", "too many open connections; retry shortly", retry=1)
            return
        self._arm_header_timer()

    # -- room for new connections -----------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Whether a request of this connection is being answered (it is then never evicted)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> bool:
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedProtocol) and not c.serving
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened)
        oldest.connections.discard(oldest)
        oldest.transport.close()
        return True

    # -- header timeout and size ------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self.header_timer = self.loop.call_later(
            self.settings.header_timeout_s, self._header_timeout
        )

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.serving:
            return
        if self.header_bytes:
            self._refuse(
                408,
                "request_timeout",
                f"the request headers did not arrive within {self.settings.header_timeout_s:g} s",
            )
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        counting = not self.serving or self.in_headers
        if counting:
            self.header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.oversized or (counting and self.in_headers and self._headers_too_large()):
            self._refuse_large_headers()

    def _headers_too_large(self) -> bool:
        """Whether the bytes of the request line and headers so far are over the limit (while
        they arrive, every byte received belongs to them)."""
        return self.header_bytes > self.settings.max_header_bytes

    def _refuse_large_headers(self) -> None:
        self._refuse(
            431,
            "headers_too_large",
            f"the request line and headers exceed {self.settings.max_header_bytes} bytes",
        )

    def on_message_begin(self) -> None:
        if not self.transport.get_write_buffer_size():
            self._disarm_send_timer()  # the last answer has gone out; a new one arms its own
        super().on_message_begin()
        self.in_headers = True
        if self.header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self._disarm_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.settings.max_header_bytes:
            self.oversized = True  # refused once the parser returns; the app never sees it
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        self.header_bytes = 0
        if self.transport.get_write_buffer_size():
            # The tail of the answer, below the pause mark, still waits for the client: a client
            # that never reads it would hold the connection (and a closing transport) forever.
            self._arm_send_timer()
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self.transport.close()  # answered before its body arrived: do not wait for the rest
            return
        super().on_response_complete()
        if not self.transport.is_closing():
            # uvicorn's keep-alive timer runs now; headers of the next request get their own.
            self._disarm_header_timer()

    def timeout_keep_alive_handler(self) -> None:
        if not self.serving:
            super().timeout_keep_alive_handler()

    # -- send timeout -----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm_send_timer()

    def _arm_send_timer(self) -> None:
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.settings.send_timeout_s, self._send_timeout)

    def resume_writing(self) -> None:
        self._disarm_send_timer()
        super().resume_writing()

    def _disarm_send_timer(self) -> None:
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def _send_timeout(self) -> None:
        """The client took nothing for ``send_timeout_s``: drop the connection and what is still
        buffered for it (``abort``; ``close`` would keep the buffer until the client reads)."""
        self.send_timer = None
        if not self.flow.write_paused and not self.transport.get_write_buffer_size():
            return  # the rest of the answer went out meanwhile
        log.info(
            "dropped a client that read nothing of its answer for %g s",
            self.settings.send_timeout_s,
        )
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self._disarm_send_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self._disarm_header_timer()
        super().shutdown()

    # -- answers of the protocol itself -----------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        if self.oversized or (self.in_headers and self._headers_too_large()):
            self._refuse_large_headers()
            return
        self._refuse(400, "invalid_http_request", f"the request is not valid HTTP/1.1: {msg}")

    def _refuse(self, status: int, code: str, message: str, retry: int | None = None) -> None:
        """Answer ``status`` with the JSON error body and close the connection."""
        self._disarm_header_timer()
        if self.transport.is_closing():
            return
        body = json.dumps(error_body(code, message)).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n",
        ]
        if retry is not None:
            head.append(b"retry-after: " + str(retry).encode() + b"\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        method = (self.scope or {}).get("method", "-") if self.scope else "-"
        path = (self.scope or {}).get("path", "-") if self.scope else "-"
        log_request(method, path, status, time.monotonic() - self.opened, client, code=code)


class GracefulServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM or SIGINT starts the service's own shutdown and whose
    process then exits 0 (uvicorn re-raises the signal, which would end it with -15).

    Args:
        config: uvicorn's configuration.
        on_signal: Called on the event loop when the first signal arrives.
        time_left: Seconds left until the shutdown deadline; the socket stays open (answering 503)
            while requests are being answered, until then at most.
    """

    drain_margin = 0.5
    """Seconds before the deadline at which the socket closes whatever is still running."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_signal: Callable[[], None],
        time_left: Callable[[], float] = lambda: 0.0,
    ) -> None:
        super().__init__(config)
        self.on_signal = on_signal
        self.time_left = time_left
        self.signalled: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def shutdown(self, sockets: Any = None) -> None:
        if self.signalled is not None:
            deadline = time.monotonic() + self.time_left() - self.drain_margin
            while time.monotonic() < deadline and self._answering():
                await asyncio.sleep(0.05)
        await super().shutdown(sockets)

    def _answering(self) -> bool:
        """Whether a request is being answered on any connection."""
        return any(getattr(c, "serving", False) for c in self.server_state.connections)

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self.signalled = sig
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_signal)


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: the guarded protocol, the keep-alive timeout, and a
    graceful-shutdown wait that leaves the app's lifespan the time to release its models."""

    class Protocol(GuardedProtocol):
        pass

    Protocol.settings = settings
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=Protocol,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        workers=1,
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )

"""Optional API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

With keys configured (``EXPLAIN_API_KEYS``), every path needs one except the probes (``/healthz``,
``/readyz``), unless ``EXPLAIN_PROTECT_METRICS`` is set ``/metrics``, and the web page's own files
(``/``, ``/favicon.ico``, ``/static/...``): they hold no data, a browser cannot send a key when it
opens a page, and the page asks for the key and sends it with every request it makes. Keys are
compared in constant time, every configured key against the one sent, and never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_body, note

__all__ = ["ApiKeyMiddleware"]

_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
_OPEN_PREFIXES = ("/static/",)


class ApiKeyMiddleware:
    """Refuses requests without a valid key with 401 ``unauthorized`` and ``WWW-Authenticate``.

    Args:
        app: The app behind.
        keys: The valid keys (none: the middleware lets everything through).
        protect_metrics: Whether ``/metrics`` needs a key too.
    """

    def __init__(self, app: ASGIApp, keys: Iterable[str], protect_metrics: bool = False) -> None:
        self.app = app
        self.keys = [key.encode("utf-8") for key in keys]
        self.open_paths = _OPEN_PATHS if protect_metrics else _OPEN_PATHS | {"/metrics"}

    def authorized(self, scope: Scope) -> bool:
        sent = _sent_key(scope)
        if sent is None:
            return False
        matched = False
        for key in self.keys:  # no early exit: the time does not tell which key came close
            matched |= hmac.compare_digest(sent, key)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or scope["path"] in self.open_paths
            or scope["path"].startswith(_OPEN_PREFIXES)
            or self.authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        note(scope, code="unauthorized")
        body = json.dumps(
            error_body(
                "unauthorized",
                "an API key is needed: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            )
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="explain-service"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _sent_key(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    return None

"""One line per request: metrics and the access log, from one middleware.

A line holds the method, path (no query string: it may carry anything), status, error code,
images, model, duration and client address; never a header, key or body. With
``EXPLAIN_LOG_FORMAT=json`` every log line of the service is one JSON object.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import LOG_FIELDS
from service.metrics import Metrics

__all__ = ["JsonFormatter", "RequestLogMiddleware", "access_log", "configure_logging"]

access_log = logging.getLogger("service.access")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """The root logger, uvicorn's and ours, in ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def log_request(
    method: str, path: str, status: int, seconds: float, client: str, **fields: Any
) -> None:
    """Write one access-log line."""
    entry = {
        "method": method,
        "path": path[:200],
        "status": status,
        "code": fields.get("code"),
        "images": fields.get("images"),
        "model": fields.get("model"),
        "duration_ms": round(seconds * 1000, 1),
        "client": client,
    }
    text = " ".join(f"{k}={v}" for k, v in entry.items() if v is not None)
    access_log.info(text, extra=entry)


class RequestLogMiddleware:
    """Counts and times every HTTP request by route (not by raw path) and logs one line for it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        fields: dict[str, Any] = {}
        scope[LOG_FIELDS] = fields

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            client = scope.get("client")
            address = f"{client[0]}:{client[1]}" if client else "-"
            log_request(scope["method"], scope["path"], status, seconds, address, **fields)

"""One JSON error body for every failure, with a stable ``code``, and the handlers that produce it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from explain.errors import ExplainError

__all__ = [
    "LOG_FIELDS",
    "ApiError",
    "ErrorBody",
    "error_body",
    "error_response",
    "install_error_handlers",
    "note",
    "quote",
    "status_for",
]

LOG_FIELDS = "explain.log"
"""Key of the ASGI scope's dict where a request's handlers note what its access-log line shows."""

MAX_QUOTE = 200
MAX_MESSAGE = 1000

log = logging.getLogger("service")

# Status of every library error code; service codes carry their status in ApiError.
_STATUS_BY_CODE: dict[str, int] = {
    "unknown_model": 404,
    "unknown_layer": 404,
    "unknown_method": 404,
    "unknown_label": 404,
    "ambiguous_layer": 422,
    "layer_not_spatial": 422,
    "method_not_applicable": 422,
    "ambiguous_label": 422,
    "target_out_of_range": 422,
    "unknown_colormap": 422,
    "invalid_weights": 422,
    "invalid_option": 422,
    "layer_required": 422,
    "invalid_image": 400,
    "extreme_aspect_ratio": 400,
    "image_too_large": 413,
}

_CODE_BY_HTTP_STATUS = {404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    """An error answered as ``{"error": {"code": ..., "message": ...}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail


def quote(value: object, limit: int = MAX_QUOTE) -> str:
    """``repr(value)`` cut to ``limit`` characters: what a message may show of client input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def note(scope: Mapping[str, object], **fields: object) -> None:
    """Note fields (``code``, ``model``, ``images``) for the request's access-log line."""
    entry = scope.get(LOG_FIELDS)
    if isinstance(entry, dict):
        entry.update(fields)


def status_for(error: ExplainError) -> int:
    return _STATUS_BY_CODE.get(error.code, 422)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The error body; a message is cut to ``MAX_MESSAGE`` characters, whatever it quotes."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=dict(headers or {}))


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body"))
        where = where if len(where) <= MAX_QUOTE else quote(where)
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, on_error: callable = lambda code: None) -> None:  # type: ignore[valid-type]
    """Map every exception to the error body; ``on_error(code)`` is told of each one."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        on_error(error.code)
        note(request.scope, code=error.code)
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(ExplainError)
    async def explain_error(request: Request, error: ExplainError) -> JSONResponse:
        on_error(error.code)
        note(request.scope, code=error.code)
        return error_response(status_for(error), error.code, str(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        on_error("invalid_option")
        note(request.scope, code="invalid_option")
        return error_response(422, "invalid_option", _validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _CODE_BY_HTTP_STATUS.get(error.status_code, "http_error")
        on_error(code)
        note(request.scope, code=code)
        return error_response(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        on_error("internal_error")
        note(request.scope, code="internal_error")
        return error_response(500, "internal_error", "the server failed to answer; this is a bug")

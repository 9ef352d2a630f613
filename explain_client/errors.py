"""What a call to the service can fail with: an error answer, an unreachable service, a timeout."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

__all__ = ["ApiError", "ClientError", "ServiceTimeoutError", "UnreachableError"]


class ClientError(Exception):
    """Base class of every error the client raises on purpose; ``code`` is stable."""

    code: str = "client_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """The service answered with an error body ``{"error": {"code", "message"}}``.

    Attributes:
        status: The HTTP status.
        code: The API's error code (``invalid_image``, ``overloaded``, ``unauthorized``, ...).
        message: The service's explanation.
        retry_after: Seconds the service asked to wait (``Retry-After``), if it said.
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error in ``response``; a body that is not the API's error shape (a proxy's page)
        becomes code ``http_<status>``."""
        code, message = f"http_{response.status_code}", response.text[:200]
        try:
            detail = response.json()["error"]
            code, message = str(detail["code"]), str(detail["message"])
        except (ValueError, KeyError, TypeError):
            pass
        return cls(response.status_code, code, message, retry_after(response.headers))


class UnreachableError(ClientError):
    """No answer: the connection failed (refused, reset, dropped) on every try."""

    code = "unreachable"


class ServiceTimeoutError(ClientError):
    """The service took longer than the client's timeout to answer."""

    code = "timeout"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form and nonsense count as absent."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None

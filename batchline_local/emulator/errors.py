"""Typed errors of the emulator, each carrying the HTTP status and OpenAI error fields it maps to.

The state and response logic raise these; the HTTP layer turns any of them into OpenAI's error
shape without looking at message text, so the SDK raises the same exception class it would
against the real API (400 -> BadRequestError, 404 -> NotFoundError, ...).
"""

from __future__ import annotations

from typing import Any


class EmulatorError(Exception):
    """An API error: the status code and the ``{"error": {...}}`` body OpenAI would send."""

    status_code = 500
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        # Extra response headers, e.g. retry-after and x-ratelimit-* on a 429.
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(EmulatorError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    status_code = 400
    error_type = "invalid_request_error"


class NotFound(EmulatorError):
    """An id or route that does not exist."""

    status_code = 404
    error_type = "invalid_request_error"


class MissingApiKey(EmulatorError):
    """No bearer token: the real API refuses these before looking at anything else."""

    status_code = 401
    error_type = "invalid_request_error"


class RateLimited(EmulatorError):
    """Over the requests or tokens limit: wait as ``retry-after`` says and try again."""

    status_code = 429

    def __init__(self, message: str, *, limit_type: str, headers: dict[str, str]) -> None:
        super().__init__(message, code="rate_limit_exceeded", headers=headers)
        self.error_type = limit_type  # "requests" or "tokens", as OpenAI reports which budget ran out


INSUFFICIENT_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


class InsufficientQuota(EmulatorError):
    """The account has no credit left: a 429 that retrying cannot cure, so it carries no retry-after."""

    status_code = 429
    error_type = "insufficient_quota"

    def __init__(self, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(INSUFFICIENT_QUOTA_MESSAGE, code="insufficient_quota", headers=headers)


_SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


class ServerError(EmulatorError):
    """A 5xx from the provider's side: worth retrying with backoff."""

    error_type = "server_error"

    def __init__(self, status_code: int = 500, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(_SERVER_ERROR_MESSAGES.get(status_code, _SERVER_ERROR_MESSAGES[500]), headers=headers)
        self.status_code = status_code

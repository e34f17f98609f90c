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

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

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

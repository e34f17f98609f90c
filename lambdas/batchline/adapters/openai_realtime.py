"""Realtime calls to the provider, one request body at a time, with the raw answer kept.

The SDK's own retries are off: the call policy (domain/realtime.py) decides what to retry, when,
and how that is shared with every other worker.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx2
import openai

from batchline.domain.realtime import ProviderResponse


class OpenAIRealtime:
    def __init__(self, *, api_key: str, base_url: str | None, timeout_seconds: float = 120) -> None:
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_seconds)

    def call(self, url: str, body: dict, *, client_request_id: str | None = None) -> ProviderResponse:
        path = url.removeprefix("/v1")
        # OpenAI logs X-Client-Request-Id with the request: support can find a request by its custom_id.
        options = (
            {"headers": {"X-Client-Request-Id": client_request_header(client_request_id)}} if client_request_id else {}
        )
        try:
            response = self._client.post(path, body=body, cast_to=httpx2.Response, options=options)
        except openai.APIStatusError as exc:
            return ProviderResponse(exc.status_code, dict(exc.response.headers), _json(exc.response))
        except openai.APIConnectionError as exc:  # includes timeouts: no HTTP answer at all
            return ProviderResponse(0, {}, {"error": {"message": str(exc), "code": "connection_error"}})
        return ProviderResponse(response.status_code, dict(response.headers), _json(response))


# Kept as they are: what ids are commonly made of, and nothing a header could not carry.
_HEADER_SAFE = "-_.~:/@+=,;!*()$&'"
_HEADER_LIMIT = 512  # the longest X-Client-Request-Id OpenAI accepts


def client_request_header(custom_id: str) -> str:
    """The custom_id as an X-Client-Request-Id value: percent-encoded, at most 512 characters.

    A header carries visible ASCII only, and a custom_id may be any string (unicode, white space
    only, a newline): sent raw, such an id made the HTTP client raise before the request left, on
    every delivery. Percent-encoding keeps ordinary ids readable and is undone by
    `urllib.parse.unquote`; a cut never splits an escape.
    """
    value = quote(custom_id, safe=_HEADER_SAFE)
    if len(value) > _HEADER_LIMIT:
        value = value[:_HEADER_LIMIT]
        escape = value.rfind("%", _HEADER_LIMIT - 2)
        if escape != -1:
            value = value[:escape]
    return value


def _json(response) -> object:
    try:
        return response.json()
    except ValueError:
        return {"error": {"message": response.text[:500], "code": None}}

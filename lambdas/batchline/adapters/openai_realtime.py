"""Realtime calls to the provider, one request body at a time, with the raw answer kept.

The SDK's own retries are off: the call policy (domain/realtime.py) decides what to retry, when,
and how that is shared with every other worker.
"""

from __future__ import annotations

import httpx2
import openai

from batchline.domain.realtime import ProviderResponse


class OpenAIRealtime:
    def __init__(self, *, api_key: str, base_url: str | None, timeout_seconds: float = 120) -> None:
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_seconds)

    def call(self, url: str, body: dict, *, client_request_id: str | None = None) -> ProviderResponse:
        path = url.removeprefix("/v1")
        # OpenAI logs X-Client-Request-Id with the request: support can find a request by its custom_id.
        options = {"headers": {"X-Client-Request-Id": client_request_id[:512]}} if client_request_id else {}
        try:
            response = self._client.post(path, body=body, cast_to=httpx2.Response, options=options)
        except openai.APIStatusError as exc:
            return ProviderResponse(exc.status_code, dict(exc.response.headers), _json(exc.response))
        except openai.APIConnectionError as exc:  # includes timeouts: no HTTP answer at all
            return ProviderResponse(0, {}, {"error": {"message": str(exc), "code": "connection_error"}})
        return ProviderResponse(response.status_code, dict(response.headers), _json(response))


def _json(response) -> object:
    try:
        return response.json()
    except ValueError:
        return {"error": {"message": response.text[:500], "code": None}}

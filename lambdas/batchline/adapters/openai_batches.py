"""The OpenAI Files and Batches API, behind a small interface the handlers use.

The only module of the cold path that imports the OpenAI client. Failures worth retrying
(connection, timeout, 429, 5xx) become TransientProviderError, which the state machine
retries with backoff; the rest become ProviderError.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai

from batchline.domain.errors import ProviderError, TransientProviderError
from batchline.engines.streams import split_lines

_TRANSIENT = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
    openai.ConflictError,
)


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, openai.RateLimitError) and getattr(exc, "code", None) == "insufficient_quota":
        # Out of credit: no backoff will help, and the message tells the user what to do.
        return ProviderError(f"insufficient_quota: {exc}")
    if isinstance(exc, _TRANSIENT):
        return TransientProviderError(f"{type(exc).__name__}: {exc}")
    return ProviderError(f"{type(exc).__name__}: {exc}")


class OpenAIBatches:
    def __init__(self, *, api_key: str, base_url: str | None, client: openai.OpenAI | None = None) -> None:
        # The SDK's own retries are kept short: Step Functions owns the long backoff.
        self._client = client or openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=2, timeout=600)

    def upload_batch_file(self, path: Path) -> str:
        try:
            with path.open("rb") as handle:
                return self._client.files.create(file=(path.name, handle), purpose="batch").id
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc

    def create_batch(self, *, input_file_id: str, endpoint: str, completion_window: str, metadata: dict) -> dict:
        try:
            batch = self._client.batches.create(
                input_file_id=input_file_id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window=completion_window,  # type: ignore[arg-type]
                metadata=metadata,
            )
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc
        return batch.model_dump()

    def retrieve_batch(self, batch_id: str) -> dict:
        try:
            return self._client.batches.retrieve(batch_id).model_dump()
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc

    def find_batch(self, metadata: dict[str, str], *, max_pages: int = 20) -> dict | None:
        """The newest batch created with exactly this metadata and not failed, if any.

        Submit looks here before it creates a batch, so that a batch created by an attempt that
        crashed before recording it is adopted instead of paid for twice. The list is newest first;
        a shard's batch is recent, so only the first pages are read.
        """
        try:
            page = self._client.batches.list(limit=100)
            for _ in range(max_pages):
                for batch in page.data:
                    if batch.status != "failed" and all(
                        (batch.metadata or {}).get(name) == value for name, value in metadata.items()
                    ):
                        return batch.model_dump()
                if not page.has_next_page():
                    return None
                page = page.get_next_page()
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc
        return None

    def cancel_batch(self, batch_id: str) -> dict:
        try:
            return self._client.batches.cancel(batch_id).model_dump()
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """A result or error file, streamed line by line."""
        try:
            with self._client.files.with_streaming_response.content(file_id) as response:
                yield from split_lines(response.iter_bytes(1 << 20))
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc

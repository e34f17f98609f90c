"""The emulator's state and API logic: files, batches, realtime requests and the billing ledger.

No HTTP here: the server module only parses requests and calls these methods, and tests can drive
the logic directly. Every method takes one lock, so the threaded HTTP server sees consistent state.

The billing ledger (``ledger()``, served at ``GET /_emulator/ledger``) holds one row per billed
request, so a test can prove that batchline never pays for the same request twice. Billed means
what OpenAI counts in ``usage`` and charges for, that is, a request the model actually executed:

- a batch request that produced an output-file line with ``status_code`` 200;
- a realtime call answered 200.

These are never billed: error-file lines (a 4xx body from the endpoint, an injected 500, and
``batch_expired`` or ``batch_cancelled`` requests that never ran), batches that failed validation
(``token_limit_exceeded`` included), and realtime refusals (400, 429, 5xx). A row is keyed by the
request's ``custom_id``: the batch line's, or the realtime call's ``X-Client-Request-Id`` header
(None when the caller sent none). ``ledger.billed_twice`` finds the custom_ids billed more than once.

The realtime endpoints are rate limited per model (ratelimits module: a token bucket refilled
continuously, as OpenAI limits, or fixed windows) and both paths fail on request (faults module);
both are configured by ``settings.emulator``.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchline.composition import model_table, price_book
from batchline.settings import (
    BATCH_ENDPOINTS,
    OPENAI_MAX_BYTES_PER_FILE,
    OPENAI_MAX_REQUESTS_PER_FILE,
    Settings,
)

from . import batches as lifecycle
from .batches import BatchRecord, RequestOutcome
from .errors import EmulatorError, InsufficientQuota, InvalidRequest, NotFound, RateLimited, ServerError
from .faults import Faults, hits
from .ratelimits import ORGANIZATION, format_duration, rate_limiter, retry_after
from .responses import Execution, respond
from .token_counts import output_cap
from .validation import BatchLine, BatchPlan, LineError, check_batch_upload, plan_batch

FALLBACK_ENCODING = "o200k_base"
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
DEFAULT_BATCH_PAGE = 20
MAX_BATCH_PAGE = 100
DEFAULT_FILE_PAGE = 10_000
MAX_FILE_PAGE = 10_000
# The injected realtime 429s and 5xx come from a generator seeded with this, so a run is repeatable.
FAULT_SEED = 1234
INJECTED_RETRY_AFTER_SECONDS = 1
ENQUEUED_TOKEN_LIMIT = "90,000"
REQUEST_ERROR_MESSAGE = "The server had an error while processing your request."
# `created` of every model in /v1/models: the emulator knows no release dates, so one fixed time.
MODELS_CREATED_AT = 1_700_000_000


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: float

    def to_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(frozen=True)
class LedgerEntry:
    """One billed execution. custom_id and batch_id are None for realtime requests."""

    custom_id: str | None
    batch_id: str | None
    model: str
    url: str
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "custom_id": self.custom_id,
            "batch_id": self.batch_id,
            "model": self.model,
            "url": self.url,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass(frozen=True)
class RealtimeAnswer:
    """A realtime request's 200 answer: the endpoint's body and the rate-limit headers that go with it."""

    body: dict[str, Any]
    headers: dict[str, str]


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def _page(items: list[Any], *, after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's cursor page: the items after the one whose id is ``after``, at most ``limit`` of them."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"No object found with id '{after}' to page after.", param="after")
        start = ids.index(after) + 1
    data = items[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(items),
    }


def _check_limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise InvalidRequest(f"limit must be between 1 and {maximum}.", param="limit", code="invalid_value")
    return limit


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidRequest("metadata must be an object of string keys and string values.", param="metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata may hold at most {MAX_METADATA_PAIRS} pairs; got {len(metadata)}.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequest(
                f"metadata key '{key[:20]}...' is longer than {MAX_METADATA_KEY_CHARS} characters.",
                param="metadata",
            )
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"metadata value for '{key}' is longer than {MAX_METADATA_VALUE_CHARS} characters.",
                param="metadata",
            )
    return dict(metadata)


class OpenAIEmulator:
    """In-memory OpenAI: the Files, Batches and model endpoints, paced by ``settings.emulator``.

    The file limits are parameters so that tests can provoke the oversize and too-many-requests
    refusals with small files; they default to OpenAI's own limits. ``clock`` lets a test move time
    (for example past the 24 h window, or while the rate-limit buckets refill) without waiting. ``faults``
    defaults to ``settings.emulator.faults``; `from_settings` also honours BATCHLINE_EMULATOR_FAULTS.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        faults: Faults | None = None,
        max_bytes_per_file: int = OPENAI_MAX_BYTES_PER_FILE,
        max_requests_per_file: int = OPENAI_MAX_REQUESTS_PER_FILE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.faults = faults if faults is not None else Faults.from_settings(settings.emulator.faults, {})
        self.max_bytes_per_file = max_bytes_per_file
        self.max_requests_per_file = max_requests_per_file
        self._clock = clock
        self._price_book = price_book(settings)
        self._model_table = model_table(settings)
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._batches_created = 0
        self._ledger: list[LedgerEntry] = []
        self._billed: dict[str, int] = {}  # answers billed per custom_id: the schema_invalid fault's attempt number
        self._limiter = rate_limiter(settings.emulator, clock)
        self._fault_rng = random.Random(FAULT_SEED)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        faults: Faults | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> OpenAIEmulator:
        """The emulator the local run and the CLI serve. Its faults, first given wins: ``faults`` (the
        command line's ``--faults``), BATCHLINE_EMULATOR_FAULTS when it is set, ``settings.emulator.faults``.
        Raise ValueError naming a wrong fault item."""
        if faults is None:
            faults = Faults.from_settings(settings.emulator.faults, os.environ if environ is None else environ)
        return cls(settings, faults=faults, **options)

    # ----- tokens -------------------------------------------------------------------------------

    def encoding_for(self, model: str) -> str:
        """The tiktoken encoding batchline's price table gives ``model``; o200k_base for unknown models."""
        price = self._price_book.price_for(model)
        return price.encoding if price is not None else FALLBACK_ENCODING

    def _execute(self, url: str, body: dict[str, Any], now: float, *, custom_id: str | None = None) -> Execution:
        off_schema = self._off_schema(custom_id, body)
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str):
            return respond(url, body, encoding=FALLBACK_ENCODING, now=now, schema_invalid=off_schema)
        limits = self._model_table.limits_for(model)
        return respond(url, body, encoding=self.encoding_for(model), now=now, limits=limits, schema_invalid=off_schema)

    def _off_schema(self, custom_id: str | None, body: Any) -> bool:
        """Whether this answer breaks its schema (the ``schema_invalid`` fault): drawn per custom_id and
        the number of answers billed to it before, so each attempt is fixed and the next one may pass."""
        share = self.faults.schema_invalid
        if share <= 0.0:
            return False
        key = custom_id or ""  # a call without X-Client-Request-Id: counted with every other such call
        return hits(share, "schema_invalid", key, str(self._billed.get(key, 0)))

    # ----- models -------------------------------------------------------------------------------

    def list_models(self) -> dict[str, Any]:
        """The models batchline prices or knows the limits of (settings included), as ``GET /v1/models``.

        The endpoints answer any model name; these are the ones whose answers are shaped by a table."""
        names = sorted({*self._price_book.known_models(), *self._model_table.known_models()})
        return {"object": "list", "data": [_model_object(name) for name in names]}

    def retrieve_model(self, model_id: str) -> dict[str, Any]:
        """One model, also a dated snapshot or fine-tune of a listed one; 404 model_not_found otherwise."""
        if self._price_book.price_for(model_id) is None and self._model_table.limits_for(model_id) is None:
            raise NotFound(
                f"The model '{model_id}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return _model_object(model_id)

    # ----- files --------------------------------------------------------------------------------

    def create_file(self, *, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        if not purpose:
            raise InvalidRequest(
                "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose == "batch":
            check_batch_upload(content, max_bytes=self.max_bytes_per_file, max_requests=self.max_requests_per_file)
        with self._lock:
            return self._store_file(filename, purpose, content).to_object()

    def _store_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(
            id=_new_id("file-"), filename=filename, purpose=purpose, content=content, created_at=self._clock()
        )
        self._files[stored.id] = stored
        return stored

    def _file(self, file_id: str) -> StoredFile:
        try:
            return self._files[file_id]
        except KeyError:
            raise NotFound(f"No such File object: {file_id}", param="id") from None

    def retrieve_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._file(file_id).to_object()

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._file(file_id).content

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self._file(file_id)
            del self._files[file_id]
            return {"id": file_id, "object": "file", "deleted": True}

    def list_files(
        self,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        order: str = "desc",
    ) -> dict[str, Any]:
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
        limit = _check_limit(limit, DEFAULT_FILE_PAGE, MAX_FILE_PAGE)
        with self._lock:
            files = [f.to_object() for f in self._files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            files.reverse()
        return _page(files, after=after, limit=limit)

    # ----- batches ------------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: Any,
        endpoint: Any,
        completion_window: Any,
        metadata: Any = None,
    ) -> dict[str, Any]:
        if endpoint not in BATCH_ENDPOINTS:
            raise InvalidRequest(
                f"Invalid endpoint '{endpoint}'. Supported: {', '.join(BATCH_ENDPOINTS)}.",
                param="endpoint",
                code="invalid_value",
            )
        if completion_window != "24h":
            raise InvalidRequest(
                f"Invalid completion_window '{completion_window}'. Only '24h' is supported.",
                param="completion_window",
                code="invalid_value",
            )
        checked_metadata = _check_metadata(metadata)
        if self.faults.insufficient_quota:
            raise InsufficientQuota()
        with self._lock:
            input_file = self._files.get(input_file_id) if isinstance(input_file_id, str) else None
            if input_file is None:
                raise InvalidRequest(
                    f"Input file '{input_file_id}' does not exist.",
                    param="input_file_id",
                    code="invalid_value",
                )
            if input_file.purpose != "batch":
                raise InvalidRequest(
                    f"Input file '{input_file_id}' has purpose '{input_file.purpose}'; batches need 'batch'.",
                    param="input_file_id",
                    code="invalid_value",
                )
            index = self._batches_created
            self._batches_created += 1
            plan = plan_batch(input_file.content, endpoint)
            if index < self.faults.token_limit:
                plan = _token_limited(plan)
            plan = _unreadable(plan, self.faults)
            share = self.faults.expire
            batch = BatchRecord(
                id=_new_id("batch_"),
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                metadata=checked_metadata,
                created_at=self._clock(),
                plan=plan,
                pace=self.settings.emulator,
                stuck=index < self.faults.stuck,
                expire_after=None if share is None else math.floor(share * len(plan.requests)),
            )
            self._batches[batch.id] = batch
            # Not advanced here: like OpenAI, the create call always answers "validating".
            return batch.to_object()

    def _batch(self, batch_id: str) -> BatchRecord:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id") from None

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._advance(batch)
            return batch.to_object()

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            lifecycle.cancel(batch, self._clock(), self._execute_batch_request, self._publish)
            return batch.to_object()

    def list_batches(self, *, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        limit = _check_limit(limit, DEFAULT_BATCH_PAGE, MAX_BATCH_PAGE)
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
            for batch in newest_first:
                self._advance(batch)
            return _page([batch.to_object() for batch in newest_first], after=after, limit=limit)

    def _advance(self, batch: BatchRecord) -> None:
        lifecycle.advance(batch, self._clock(), self._execute_batch_request, self._publish)

    def _execute_batch_request(self, batch: BatchRecord, request: BatchLine, at: float) -> RequestOutcome:
        request_id = _new_id("req_")
        # The injected server error is keyed on the batch too, so the same request resubmitted in a
        # new batch can succeed, while looking at the same batch again always gives the same answer.
        if hits(self.faults.request_error, batch.id, request.custom_id):
            server_error = {"message": REQUEST_ERROR_MESSAGE, "type": "server_error", "param": None, "code": None}
            return _refused(request.custom_id, request_id, 500, {"error": server_error})
        try:
            execution = self._execute(request.url, request.body, at, custom_id=request.custom_id)
        except EmulatorError as refused:
            # The endpoint refused this one request: it goes to the error file with the HTTP
            # status and error body, and nothing is billed.
            return _refused(request.custom_id, request_id, refused.status_code, refused.body())
        self._record(execution, url=request.url, custom_id=request.custom_id, batch_id=batch.id)
        line = {
            "id": lifecycle.new_batch_request_id(),
            "custom_id": request.custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": execution.body},
            "error": None,
        }
        return RequestOutcome(
            line=line,
            succeeded=True,
            input_tokens=execution.prompt_tokens,
            output_tokens=execution.completion_tokens,
        )

    def _publish(self, filename: str, lines: list[dict[str, Any]]) -> str:
        content = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        return self._store_file(filename, "batch_output", content).id

    # ----- realtime -----------------------------------------------------------------------------

    def realtime(self, url: str, body: Any, *, client_request_id: str | None = None) -> RealtimeAnswer:
        """Answer one realtime request the way the endpoint at ``url`` would, and bill it.

        Order of refusals: an invalid request (400) charges nothing; then the injected faults; then
        the model's rate limits, which charge one request and the request's prompt tokens plus its
        output cap, or refuse it (429) charging nothing. Only an answered request reaches the ledger, under the
        caller's ``X-Client-Request-Id`` (batchline sends the request's custom_id there).
        """
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
        execution = self._execute(url, body, self._clock(), custom_id=client_request_id)
        self._inject_realtime_fault(execution.model)
        cost = execution.prompt_tokens + output_cap(url, body, self.settings.assumed_output_tokens)
        headers = self._limiter.admit(execution.model, cost)
        with self._lock:
            self._record(execution, url=url, custom_id=client_request_id, batch_id=None)
        latency = self.settings.emulator.realtime_latency_seconds
        if latency > 0:
            time.sleep(latency)  # outside every lock: concurrent requests wait side by side
        return RealtimeAnswer(body=execution.body, headers=headers)

    def _inject_realtime_fault(self, model: str) -> None:
        faults = self.faults
        if faults.insufficient_quota:
            self._limiter.count_refusal(model, 429)
            raise InsufficientQuota(headers=self._limiter.headers(model))
        if not (faults.http_5xx or faults.http_429):
            return
        with self._lock:
            draw = self._fault_rng.random()
            status = self._fault_rng.choice((500, 502, 503))
        if draw < faults.http_5xx:
            self._limiter.count_refusal(model, status)
            raise ServerError(status, headers=self._limiter.headers(model))
        if draw < faults.http_5xx + faults.http_429:
            self._limiter.count_refusal(model, 429)
            limit = self._limiter.requests_per_minute
            message = (
                f"Rate limit reached for {model} in organization {ORGANIZATION} on requests per min (RPM): "
                f"Limit {limit}, Used {limit}, Requested 1. "
                f"Please try again in {format_duration(INJECTED_RETRY_AFTER_SECONDS)}."
            )
            headers = {**retry_after(INJECTED_RETRY_AFTER_SECONDS), **self._limiter.headers(model)}
            raise RateLimited(message, limit_type="requests", headers=headers)

    def stats(self) -> dict[str, Any]:
        """The rate limits and the realtime usage per model: requests answered and refused, tokens charged.

        ``{"algorithm", "burst_seconds" (None for fixed_window), "requests_per_minute", "tokens_per_minute",
        "window_seconds", "requests_per_window", "tokens_per_window", "models": {model: {"requests_ok",
        "requests_429", "requests_5xx", "tokens_charged", "first_admitted_at", "last_admitted_at",
        "windows": [{"window_start", "requests", "tokens", "refused"}]}}}``, windows oldest first: the
        rate windows for fixed_window, one-second windows for token_bucket (see the ratelimits module).
        """
        return self._limiter.stats()

    # ----- billing ledger -----------------------------------------------------------------------

    def _record(self, execution: Execution, *, url: str, custom_id: str | None, batch_id: str | None) -> None:
        if self.faults.schema_invalid > 0.0:
            key = custom_id or ""
            self._billed[key] = self._billed.get(key, 0) + 1
        self._ledger.append(
            LedgerEntry(
                custom_id=custom_id,
                batch_id=batch_id,
                model=execution.model,
                url=url,
                prompt_tokens=execution.prompt_tokens,
                completion_tokens=execution.completion_tokens,
            )
        )

    def ledger(self) -> list[dict[str, Any]]:
        """Every billed execution so far, oldest first. Batches due by now are brought up to date first."""
        with self._lock:
            for batch in self._batches.values():
                self._advance(batch)
            return [entry.to_dict() for entry in self._ledger]


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED_AT, "owned_by": "system"}


def _refused(custom_id: str, request_id: str, status_code: int, body: dict[str, Any]) -> RequestOutcome:
    """An error-file line for a batch request the endpoint answered with an error; nothing billed."""
    line = {
        "id": lifecycle.new_batch_request_id(),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }
    return RequestOutcome(line=line, succeeded=False, input_tokens=0, output_tokens=0)


def _unreadable(plan: BatchPlan, faults: Faults) -> BatchPlan:
    """The plan of a batch whose file holds a request the faults make unreadable (see faults.py)."""
    for request in plan.requests:
        if request.custom_id == faults.refuse_line:
            error = LineError("invalid_json_line", request.line, "This line is not parseable as valid JSON.", None)
        elif request.custom_id == faults.refuse_file:
            error = LineError("invalid_file_format", None, "The batch input file could not be read.", None)
        else:
            continue
        return BatchPlan(requests=(), model=plan.model, errors=(error,))
    return plan


def _token_limited(plan: BatchPlan) -> BatchPlan:
    """The plan of a batch refused for the enqueued-token limit, as OpenAI reports it."""
    message = (
        f"Enqueued token limit reached for {plan.model} in organization {ORGANIZATION}. "
        f"Limit: {ENQUEUED_TOKEN_LIMIT} enqueued tokens. "
        "Please try again once some in_progress batches have been completed."
    )
    return BatchPlan(
        requests=(),
        model=plan.model,
        errors=(LineError(code="token_limit_exceeded", line=None, message=message, param=None),),
    )

"""What became of each request: the records of results.jsonl and errors.jsonl, and their joining.

OpenAI returns a batch's outputs in no particular order and keyed by custom_id; the user wants
them back in input order with their line numbers. A shard's manifest (line, custom_id) is the
bridge. Every request of a shard ends as exactly one result or one error: a request the provider
never mentions becomes an error too, so nothing is lost in silence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchline.domain.answers import Parsed, RoundSchemas, SchemaProblem, check_answer
from batchline.domain.pricing import PriceBook

STAGE_VALIDATION = "validation"
STAGE_PROVIDER = "provider"

ROUTE_BATCH = "batch"


def result_record(
    *, custom_id: str, line: int, route: str, model: str, response: Any, parsed: Parsed | None = None
) -> dict[str, Any]:
    """A result of results.jsonl; an answer that followed the schema its request asked for carries its
    value as `parsed`, so that no later step parses it again."""
    usage = response.get("usage") if isinstance(response, dict) else None
    record = {
        "custom_id": custom_id,
        "line": line,
        "route": route,
        "model": model,
        "response": response,
        "usage": usage,
    }
    if parsed is not None:
        record["parsed"] = parsed.value
    return record


def error_record(
    *,
    custom_id: str | None,
    line: int,
    stage: str,
    code: str,
    message: str,
    status_code: int | None = None,
    usage: Any = None,
) -> dict[str, Any]:
    """An error of errors.jsonl; one for an answer the provider billed (it failed its schema) carries its usage."""
    record = {
        "custom_id": custom_id,
        "line": line,
        "stage": stage,
        "code": code,
        "message": message,
        "status_code": status_code,
    }
    if usage is not None:
        record["usage"] = usage
    return record


def schema_error(*, custom_id: str, line: int, problem: SchemaProblem, usage: Any) -> dict[str, Any]:
    """The error of an answer that did not follow its schema: billed, so its usage goes with it."""
    return error_record(
        custom_id=custom_id,
        line=line,
        stage=STAGE_PROVIDER,
        code=problem.code,
        message=problem.message,
        status_code=200,
        usage=usage if isinstance(usage, dict) else {},
    )


def usage_tokens(usage: Any) -> tuple[int, int]:
    """(input, output) tokens from a usage object of any endpoint's shape."""
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
    return int(prompt), int(completion)


@dataclass(slots=True)
class ShardTally:
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_usd_if_realtime: float = 0.0
    error_codes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class BatchJoiner:
    """Turns the lines of one batch's output and error files into per-line records.

    With the round's `schemas`, an answer whose request asked for a JSON Schema is checked against
    it: one that does not follow it is a failure (`schema_invalid`, or `refusal`), yet billed, so
    its tokens and cost are tallied as a success's are.
    """

    def __init__(
        self, *, manifest: dict[str, int], model: str, prices: PriceBook, schemas: RoundSchemas | None = None
    ) -> None:
        self._pending = dict(manifest)  # custom_id -> line, shrinking as outcomes arrive
        self._model = model
        self._prices = prices
        self._schemas = schemas if schemas is not None and schemas.any else None
        self.tally = ShardTally()

    def _take_line(self, custom_id: Any) -> int | None:
        if not isinstance(custom_id, str):
            return None
        return self._pending.pop(custom_id, None)

    def provider_lines(self, raw_lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any], bool]]:
        """Yield (line, record, succeeded) for every line of an output or error file.

        Both error-file shapes of the reference are read: a response with an error status and
        body, and a null response with an `error` object (never executed, e.g. batch_expired).
        A custom_id that is not in the shard, or repeats, is ignored: it cannot be ours.
        """
        for raw in raw_lines:
            if not raw.strip():
                continue
            item = orjson.loads(raw)
            custom_id = item.get("custom_id")
            line = self._take_line(custom_id)
            if line is None:
                continue
            response = item.get("response") or None
            error = item.get("error") or None
            status = response.get("status_code") if response else None
            body = response.get("body") if response else None
            if response and status == 200 and not error:
                yield line, *self._answered(custom_id, line, body)
            else:
                yield line, self._failed(custom_id, line, status, body, error), False

    def _answered(self, custom_id: str, line: int, body: Any) -> tuple[dict[str, Any], bool]:
        """A 200's record: a result, or the error of an answer that failed its schema; billed either way."""
        usage = body.get("usage") if isinstance(body, dict) else None
        input_tokens, output_tokens = usage_tokens(usage)
        tally = self.tally
        tally.input_tokens += input_tokens
        tally.output_tokens += output_tokens
        tally.cost_usd += self._prices.batch_cost(self._model, input_tokens, output_tokens)
        tally.cost_usd_if_realtime += self._prices.realtime_cost(self._model, input_tokens, output_tokens)
        schema = self._schemas.schema_for(custom_id) if self._schemas is not None else None
        outcome = check_answer(schema, body) if schema is not None else None
        if isinstance(outcome, SchemaProblem):
            self._count_failure(outcome.code)
            return schema_error(custom_id=custom_id, line=line, problem=outcome, usage=usage), False
        tally.succeeded += 1
        record = result_record(
            custom_id=custom_id, line=line, route=ROUTE_BATCH, model=self._model, response=body, parsed=outcome
        )
        return record, True

    def _failed(self, custom_id: str, line: int, status: int | None, body: Any, error: Any) -> dict[str, Any]:
        if isinstance(error, dict):
            code = str(error.get("code") or "provider_error")
            message = str(error.get("message") or "the provider did not execute this request")
        else:
            detail = body.get("error") if isinstance(body, dict) else None
            detail = detail if isinstance(detail, dict) else {}
            code = str(detail.get("code") or detail.get("type") or f"http_{status}")
            message = str(detail.get("message") or f"the provider answered HTTP {status}")
        return self._error(custom_id, line, code, message, status)

    def _count_failure(self, code: str) -> None:
        self.tally.failed += 1
        self.tally.error_codes[code] = self.tally.error_codes.get(code, 0) + 1

    def _error(self, custom_id: str, line: int, code: str, message: str, status: int | None = None) -> dict[str, Any]:
        self._count_failure(code)
        return error_record(
            custom_id=custom_id, line=line, stage=STAGE_PROVIDER, code=code, message=message, status_code=status
        )

    def unanswered(self, code: str, message: str) -> Iterator[tuple[int, dict[str, Any], bool]]:
        """Every request the provider's files did not mention, as an error with the given reason."""
        pending, self._pending = self._pending, {}
        for custom_id, line in pending.items():
            yield line, self._error(custom_id, line, code, message), False

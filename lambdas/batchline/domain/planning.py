"""Planning: validate every line, group requests by (endpoint, model) and cut them into shards.

A shard is one future OpenAI batch: one endpoint, one model, at most `max_requests` requests,
`max_bytes` bytes and the model's enqueued-token limit in prompt tokens (a batch larger than the
whole limit could never be admitted, so it is cut here). Requests stream through: the planner
holds only the open shard of each group, the custom_id registry and counters, never the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from batchline.domain.custom_ids import CustomIdRegistry
from batchline.domain.pricing import PriceBook
from batchline.domain.request_line import InvalidLine, RequestValidator, ValidRequest
from batchline.domain.tokens import ParallelTokenCounter
from batchline.settings import BATCH_ENDPOINTS, Settings

# Requests parsed between two hand-overs to the token-counting threads.
_BLOCK = 2048


class ShardWriter(Protocol):
    """Receives the requests of one shard in input order; `close` makes the shard durable."""

    def write(self, request: ValidRequest) -> None: ...

    def close(self) -> None: ...


class PlanOutputs(Protocol):
    """Where a plan puts its shards and its invalid lines (S3 in production, memory in tests)."""

    def open_shard(self, shard_id: str, url: str, model: str) -> ShardWriter: ...

    def invalid_line(self, error: InvalidLine) -> None: ...


@dataclass(slots=True)
class ShardPlan:
    shard_id: str
    url: str
    model: str
    requests: int = 0
    bytes: int = 0
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    first_line: int = 0
    last_line: int = 0
    estimated_cost_usd: float = 0.0
    estimated_cost_usd_if_realtime: float = 0.0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class PlanSummary:
    input_lines: int = 0
    valid: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    estimated_cost_usd: float = 0.0
    estimated_cost_usd_if_realtime: float = 0.0
    shards: list[ShardPlan] = field(default_factory=list)


def encode_manifest_entry(line: int, custom_id: str) -> bytes:
    """One manifest line: which input line a custom_id came from, so results can be joined back."""
    return f"{line}\t{json.dumps(custom_id, ensure_ascii=False)}\n".encode()


def decode_manifest_entry(raw: bytes) -> tuple[int, str]:
    line, custom_id = raw.rstrip(b"\n").split(b"\t", 1)
    return int(line), json.loads(custom_id)


class _OpenShard:
    __slots__ = ("plan", "writer")

    def __init__(self, plan: ShardPlan, writer: ShardWriter) -> None:
        self.plan = plan
        self.writer = writer


class Planner:
    def __init__(
        self,
        *,
        validator: RequestValidator,
        prices: PriceBook,
        outputs: PlanOutputs,
        max_requests: int,
        max_bytes: int,
        token_counter: ParallelTokenCounter,
        max_prompt_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self._validator = validator
        self._token_counter = token_counter
        self._prices = prices
        self._outputs = outputs
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._max_prompt_tokens = max_prompt_tokens or (lambda model: 1 << 62)
        self._token_limits: dict[str, int] = {}
        self._registry = CustomIdRegistry()
        self._open: dict[tuple[str, str], _OpenShard] = {}
        self._summary = PlanSummary()

    def run(self, lines: Iterable[tuple[int, bytes]]) -> PlanSummary:
        """Plan every line. Parsing of one block overlaps the token counting of the previous one."""
        validate = self._validator.validate
        first_line = self._registry.first_line
        summary = self._summary
        block: list[ValidRequest] = []
        pending = None
        for number, raw in lines:
            summary.input_lines += 1
            outcome = validate(number, raw)
            if type(outcome) is ValidRequest:
                first = first_line(outcome.custom_id, number)
                if first is None:
                    block.append(outcome)
                    if len(block) >= _BLOCK:
                        if pending is not None:
                            self._commit(*pending)
                        pending = (block, self._token_counter.submit([(r.counter, r.texts) for r in block]))
                        block = []
                    continue
                outcome = InvalidLine(
                    number,
                    outcome.custom_id,
                    "duplicate_custom_id",
                    f"custom_id {outcome.custom_id!r} was already used on line {first}",
                )
            summary.invalid += 1
            self._outputs.invalid_line(outcome)
        if pending is not None:
            self._commit(*pending)
        if block:
            self._commit(block, self._token_counter.submit([(r.counter, r.texts) for r in block]))
        for shard in self._open.values():
            shard.writer.close()
        self._open.clear()
        summary.shards.sort(key=lambda plan: plan.shard_id)
        self._price()
        return summary

    def _commit(self, block: list[ValidRequest], counts) -> None:
        for request, count in zip(block, counts(), strict=True):
            request.prompt_tokens = request.fixed_tokens + count
            self._add(request)

    def _add(self, request: ValidRequest) -> None:
        key = (request.url, request.model)
        shard = self._open.get(key)
        size = len(request.raw) + 1  # the newline that ends it in the shard file
        if shard is not None and (
            shard.plan.requests >= self._max_requests
            or shard.plan.bytes + size > self._max_bytes
            or shard.plan.prompt_tokens + request.prompt_tokens > self._token_limit(request.model)
        ):
            shard.writer.close()
            shard = None
        if shard is None:
            plan = ShardPlan(
                shard_id=f"{len(self._summary.shards) + 1:05d}",
                url=request.url,
                model=request.model,
                first_line=request.line,
            )
            self._summary.shards.append(plan)
            shard = self._open[key] = _OpenShard(plan, self._outputs.open_shard(plan.shard_id, plan.url, plan.model))
        shard.writer.write(request)
        plan = shard.plan
        plan.requests += 1
        plan.bytes += size
        plan.prompt_tokens += request.prompt_tokens
        plan.max_output_tokens += request.max_output_tokens
        plan.last_line = request.line
        summary = self._summary
        summary.valid += 1
        summary.prompt_tokens += request.prompt_tokens
        summary.max_output_tokens += request.max_output_tokens

    def _token_limit(self, model: str) -> int:
        try:
            return self._token_limits[model]
        except KeyError:
            limit = self._token_limits[model] = self._max_prompt_tokens(model)
            return limit

    def _price(self) -> None:
        """Estimates are linear in tokens, so each shard is priced once from its totals."""
        summary = self._summary
        for plan in summary.shards:
            plan.estimated_cost_usd = self._prices.batch_cost(plan.model, plan.prompt_tokens, plan.max_output_tokens)
            plan.estimated_cost_usd_if_realtime = self._prices.realtime_cost(
                plan.model, plan.prompt_tokens, plan.max_output_tokens
            )
        summary.estimated_cost_usd = sum(plan.estimated_cost_usd for plan in summary.shards)
        summary.estimated_cost_usd_if_realtime = sum(plan.estimated_cost_usd_if_realtime for plan in summary.shards)


def validator_for(settings: Settings) -> RequestValidator:
    """The validator every step uses: the same endpoints, prices, output assumption and line limit."""
    return RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=settings.price_book(),
        assumed_output_tokens=settings.assumed_output_tokens,
        max_line_bytes=settings.shard_max_bytes - 1,  # a line and its newline must fit in a shard
    )


def planner_for(settings: Settings, *, outputs: PlanOutputs, token_counter: ParallelTokenCounter) -> Planner:
    return Planner(
        validator=validator_for(settings),
        prices=settings.price_book(),
        outputs=outputs,
        max_requests=settings.shard_max_requests,
        max_bytes=settings.shard_max_bytes,
        token_counter=token_counter,
        max_prompt_tokens=settings.batch_queue.limit_for,
    )

"""Planning: validate every line, group requests by (endpoint, model) and cut them into shards.

A shard is one future OpenAI batch: one endpoint, one model, at most `max_requests` requests,
`max_bytes` bytes and the model's enqueued-token limit in prompt tokens (a batch larger than the
whole limit could never be admitted, so it is cut here). Requests stream through: the planner
holds only the open shard of each group, a block or two of requests being counted, the custom_id
registry (bounded: it spills to a temporary file) and counters, never the file, so its memory
is the same for a thousand lines and for ten million.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchline.domain.answer_cache import AnswerLookup, request_hash
from batchline.domain.pricing import PriceBook
from batchline.domain.request_line import InvalidLine, RequestValidator, ValidRequest
from batchline.domain.shard_lines import canonical_line
from batchline.domain.tokens import PendingCounts, TokenCountingPool

# Requests parsed between two hand-overs to the token-counting threads, and the blocks that may
# wait for their counts before the planner waits for the oldest (a few MB of requests in all).
_BLOCK = 2048
_BLOCKS_PENDING = 3


def _no_open_shard(request: ValidRequest) -> None:
    raise AssertionError("a request was written before its shard was opened")


class CustomIds(Protocol):
    """The job's custom_ids so far: each is unique, and a repeat is told the line of its first use.

    Bounded in memory whatever the file (`batchline.engines.custom_ids` spills to disk); one per plan.
    """

    def first_lines(self, custom_ids: list[str], lines: list[int]) -> list[int | None]:
        """Register each id seen on its line; for a repeat, the line it was first seen on, else None."""
        ...

    def close(self) -> None: ...


class ShardWriter(Protocol):
    """Receives the requests of one shard in input order; `close` makes the shard durable."""

    def write(self, request: ValidRequest) -> None: ...

    def close(self) -> None: ...


class PlanOutputs(Protocol):
    """Where a plan puts its shards and its invalid lines (S3 in production, memory in tests)."""

    def open_shard(self, shard_id: str, url: str, model: str) -> ShardWriter: ...

    def invalid_line(self, error: InvalidLine) -> None: ...


class ReuseOutputs(Protocol):
    """Where a plan puts the requests it does not send (see domain/answer_cache.py), in line order."""

    def cached(self, request: ValidRequest, packed: bytes) -> None:
        """The request's answer is known: it is its line's result."""
        ...

    def duplicate(self, request: ValidRequest, first_line: int) -> None:
        """The request was asked on `first_line` already: it gets a copy of that line's outcome."""
        ...

    def sent(self, requests: list[ValidRequest], keys: list[str]) -> None:
        """These requests go to the provider: each one's cache key, to keep its answer under."""
        ...


@dataclass(frozen=True)
class AnswerReuse:
    """What the planner needs to send only what has no answer yet: the cache, where the requests it
    keeps back go, and a registry of the keys seen so far in the file (bounded, as the custom_ids')."""

    lookup: AnswerLookup
    outputs: ReuseOutputs
    keys: CustomIds


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

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class PlanSummary:
    input_lines: int = 0
    valid: int = 0  # requests to send (in the shards)
    invalid: int = 0
    cached: int = 0  # answered from the cache
    duplicates: int = 0  # repeats of an earlier line, which get its outcome
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    estimated_cost_usd: float = 0.0
    estimated_cost_usd_if_realtime: float = 0.0
    shards: list[ShardPlan] = field(default_factory=list)


def encode_manifest_entry(line: int, custom_id: str) -> bytes:
    """One manifest line: which input line a custom_id came from, so results can be joined back."""
    if custom_id.isprintable() and '"' not in custom_id and "\\" not in custom_id:
        # What json.dumps gives for an id with nothing to escape, at a tenth of the cost.
        return f'{line}\t"{custom_id}"\n'.encode()
    return f"{line}\t{json.dumps(custom_id, ensure_ascii=False)}\n".encode()


def decode_manifest_entry(raw: bytes) -> tuple[int, str]:
    line, custom_id = raw.rstrip(b"\n").split(b"\t", 1)
    return int(line), json.loads(custom_id)


class _OpenShard:
    __slots__ = ("plan", "writer", "write", "token_limit")

    def __init__(self, plan: ShardPlan, writer: ShardWriter, token_limit: int) -> None:
        self.plan = plan
        self.writer = writer
        self.write = writer.write
        self.token_limit = token_limit


class Planner:
    def __init__(
        self,
        *,
        validator: RequestValidator,
        prices: PriceBook,
        outputs: PlanOutputs,
        max_requests: int,
        max_bytes: int,
        token_counter: TokenCountingPool,
        custom_ids: CustomIds,
        max_prompt_tokens: Callable[[str], int] | None = None,
        reuse: AnswerReuse | None = None,
    ) -> None:
        self._validator = validator
        self._token_counter = token_counter
        self._prices = prices
        self._outputs = outputs
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._max_prompt_tokens = max_prompt_tokens or (lambda model: 1 << 62)
        self._registry = custom_ids
        self._reuse = reuse
        self._open: dict[tuple[str, str], _OpenShard] = {}
        self._summary = PlanSummary()

    def run(self, lines: Iterable[tuple[int, bytes | InvalidLine]]) -> PlanSummary:
        """Plan every line. Parsing of one block overlaps the token counting of the previous ones.

        Lines go by blocks: a block's custom_ids are checked together, its invalid lines (repeats
        included) are reported in line order, its tokens are counted (see TokenCountingPool), and its
        requests are written to their shards once counted, blocks in input order. With `reuse`, a
        block's requests whose answer is known, or that repeat an earlier line, are kept back before
        they are counted (`_keep_back`): the shards, their estimates and the budget hold are only
        what is sent.
        """
        try:
            self._run(lines)
        finally:
            self._registry.close()
            if self._reuse is not None:
                self._reuse.keys.close()
        summary = self._summary
        summary.shards.sort(key=lambda plan: plan.shard_id)
        self._price()
        return summary

    def _run(self, lines: Iterable[tuple[int, bytes | InvalidLine]]) -> None:
        validate = self._validator.validate
        summary = self._summary
        block: list[ValidRequest] = []
        invalid: list[InvalidLine] = []
        pending: deque[tuple[list[ValidRequest], list[InvalidLine], PendingCounts]] = deque()
        seen = 0  # lines in the block, valid or not
        for number, raw in lines:
            # A table job's row that could not be rendered comes as its InvalidLine already.
            outcome = raw if type(raw) is InvalidLine else validate(number, raw)
            if type(outcome) is ValidRequest:
                block.append(outcome)
            else:
                invalid.append(outcome)
            seen += 1
            if seen >= _BLOCK:
                summary.input_lines += seen
                pending.append(self._hand_over(block, invalid))
                # Write the blocks already counted, so the counting threads are never idle
                # while the shards are written.
                while pending and (len(pending) > _BLOCKS_PENDING or pending[0][2].ready()):
                    self._commit(*pending.popleft())
                block, invalid, seen = [], [], 0
        summary.input_lines += seen
        if seen:
            pending.append(self._hand_over(block, invalid))
        while pending:
            self._commit(*pending.popleft())
        for shard in self._open.values():
            shard.writer.close()
        self._open.clear()

    def _hand_over(
        self, block: list[ValidRequest], invalid: list[InvalidLine]
    ) -> tuple[list[ValidRequest], list[InvalidLine], PendingCounts]:
        """Make each request's line canonical (see shard_lines), drop the block's repeated custom_ids
        (into `invalid`) and start counting the tokens of the rest.

        A request refused later for its size (`_commit`) keeps its custom_id registered: a later
        line with the same id is reported as its repeat, as the provider would see both.
        """
        block = self._canonical(block, invalid)
        firsts = self._registry.first_lines([r.custom_id for r in block], [r.line for r in block])
        if firsts.count(None) != len(firsts):
            kept = []
            for request, first in zip(block, firsts, strict=True):
                if first is None:
                    kept.append(request)
                else:
                    invalid.append(
                        InvalidLine(
                            request.line,
                            request.custom_id,
                            "duplicate_custom_id",
                            f"custom_id {request.custom_id!r} was already used on line {first}",
                        )
                    )
            block = kept
        if self._reuse is not None and block:
            block = self._keep_back(block, self._reuse)
        return block, invalid, self._token_counter.submit([(r.counter, r.texts) for r in block])

    def _keep_back(self, block: list[ValidRequest], reuse: AnswerReuse) -> list[ValidRequest]:
        """The block's requests still to send: a repeat of an earlier line (the same key) is recorded as
        its duplicate, one whose answer the cache knows as its result; one lookup for the block.

        The first of equal requests is the one sent (or answered from the cache); a request that
        Plan refuses later (its prompt too long) is still the first, and its repeats copy that error.
        """
        keys = [request_hash(request.raw) for request in block]
        firsts = reuse.keys.first_lines(keys, [request.line for request in block])
        known = reuse.lookup.known([key for key, first in zip(keys, firsts, strict=True) if first is None])
        if not known and firsts.count(None) == len(firsts):  # the usual block: everything is sent
            reuse.outputs.sent(block, keys)
            return block
        kept, kept_keys = [], []
        outputs, summary = reuse.outputs, self._summary
        for request, key, first in zip(block, keys, firsts, strict=True):
            if first is not None:
                outputs.duplicate(request, first)
                summary.duplicates += 1
            elif (packed := known.get(key)) is not None:
                outputs.cached(request, packed)
                summary.cached += 1
            else:
                kept.append(request)
                kept_keys.append(key)
        outputs.sent(kept, kept_keys)
        return kept

    def _canonical(self, block: list[ValidRequest], invalid: list[InvalidLine]) -> list[ValidRequest]:
        """The block with every line as it will be written; one that escaping made too long for a
        shard is an invalid line (it was within the limit as the user wrote it)."""
        too_long = False
        for request in block:
            raw = request.raw
            canonical = request.raw = canonical_line(raw)
            if canonical is not raw and len(canonical) >= self._max_bytes:
                too_long = True
        if not too_long:
            return block
        kept = []
        for request in block:
            if len(request.raw) < self._max_bytes:
                kept.append(request)
            else:
                invalid.append(
                    InvalidLine(
                        request.line,
                        request.custom_id,
                        "line_too_large",
                        f"line is {len(request.raw)} bytes once its line separators are escaped; "
                        f"one request may be at most {self._max_bytes - 1} bytes",
                    )
                )
        return kept

    def _report(self, invalid: list[InvalidLine]) -> None:
        """The block's invalid lines, in line order (Finalize merges the errors files by line)."""
        invalid.sort(key=lambda error: error.line)
        self._summary.invalid += len(invalid)
        invalid_line = self._outputs.invalid_line
        for error in invalid:
            invalid_line(error)

    def _commit(self, block: list[ValidRequest], invalid: list[InvalidLine], counts: PendingCounts) -> None:
        """Put each counted request of the block in its group's open shard, cutting a new one at a limit.

        A request whose counted prompt is more than the provider allows for its model is refused
        here instead (one comparison per request, see `RequestValidator.after_count`), and
        reported with the block's other invalid lines. Consecutive requests mostly go to the same
        shard, so its figures are kept in local variables while they do and stored back when the
        shard changes.
        """
        open_shards = self._open
        max_requests, max_bytes = self._max_requests, self._max_bytes
        prompt_total = output_total = 0
        url: str | None = None
        model: str | None = None
        shard: _OpenShard | None = None
        plan: ShardPlan | None = None
        write: Callable[[ValidRequest], None] = _no_open_shard
        requests = size_total = tokens_total = outputs_total = limit = last_line = 0
        committed = 0
        for request, count in zip(block, counts(), strict=True):
            tokens = request.prompt_tokens = request.fixed_tokens + count
            if tokens > request.prompt_limit or (request.item_limit and tokens > request.item_limit):
                refusal = self._validator.after_count(request)
                if refusal is not None:
                    invalid.append(refusal)
                    continue
            committed += 1
            size = len(request.raw) + 1  # the newline that ends it in the shard file
            if request.model != model or request.url != url:
                if plan is not None:
                    plan.requests, plan.bytes, plan.prompt_tokens = requests, size_total, tokens_total
                    plan.max_output_tokens, plan.last_line = outputs_total, last_line
                url, model = request.url, request.model
                shard = open_shards.get((url, model))
                if shard is None:
                    plan = None
                else:
                    plan, write, limit = shard.plan, shard.write, shard.token_limit
                    requests, size_total, tokens_total = plan.requests, plan.bytes, plan.prompt_tokens
                    outputs_total, last_line = plan.max_output_tokens, plan.last_line
            if (
                plan is None
                or requests >= max_requests
                or size_total + size > max_bytes
                or tokens_total + tokens > limit
            ):
                if plan is not None and shard is not None:
                    plan.requests, plan.bytes, plan.prompt_tokens = requests, size_total, tokens_total
                    plan.max_output_tokens, plan.last_line = outputs_total, last_line
                    shard.writer.close()
                shard = self._open_shard(request)
                plan, write, limit = shard.plan, shard.write, shard.token_limit
                requests = size_total = tokens_total = outputs_total = 0
            write(request)
            requests += 1
            size_total += size
            tokens_total += tokens
            outputs_total += request.max_output_tokens
            last_line = request.line
            prompt_total += tokens
            output_total += request.max_output_tokens
        if plan is not None:
            plan.requests, plan.bytes, plan.prompt_tokens = requests, size_total, tokens_total
            plan.max_output_tokens, plan.last_line = outputs_total, last_line
        self._report(invalid)
        summary = self._summary
        summary.valid += committed
        summary.prompt_tokens += prompt_total
        summary.max_output_tokens += output_total

    def _open_shard(self, request: ValidRequest) -> _OpenShard:
        plan = ShardPlan(
            shard_id=f"{len(self._summary.shards) + 1:05d}",
            url=request.url,
            model=request.model,
            first_line=request.line,
        )
        self._summary.shards.append(plan)
        writer = self._outputs.open_shard(plan.shard_id, plan.url, plan.model)
        shard = self._open[(plan.url, plan.model)] = _OpenShard(plan, writer, self._max_prompt_tokens(plan.model))
        return shard

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

"""What a file will cost before it is sent: the plan's own counts, priced, per (endpoint, model).

The estimate runs the pipeline's Planner over the file with `CountingPlanOutputs`, a PlanOutputs
that keeps no shard content. So validation, exact token counts, output caps and the cut into
shards (one OpenAI batch each) are the pipeline's own, not a second implementation of them.

While the requests stream past, the outputs also keep what the options need, in bounded memory:
the invalid lines (for `validate`), prompt-token totals recounted under other encodings (to price
the same requests with another model) and a seeded random sample of the requests that may produce
output tokens (to measure real output lengths instead of assuming the cap).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from batchline.domain.planning import PlanSummary
from batchline.domain.pricing import PriceBook
from batchline.domain.request_line import InvalidLine, ValidRequest
from batchline.domain.tokens import PendingCounts, TextCounter, TokenCountingPool

OUTPUT_FROM_MAX_TOKENS = "max_tokens"
OUTPUT_FROM_SAMPLE = "sample"

GroupKey = tuple[str, str]  # (endpoint, model)

# Requests recounted under another encoding per hand-over to the token-counting threads.
_RECOUNT_BLOCK = 2048


@dataclass(frozen=True, slots=True)
class SampledRequest:
    line: int
    custom_id: str
    url: str
    model: str
    raw: bytes
    max_output_tokens: int


class _DiscardingShard:
    """Receives a shard's requests and keeps none of them; the outputs watch them go by."""

    __slots__ = ("_seen",)

    def __init__(self, seen: Callable[[ValidRequest], None]) -> None:
        self._seen = seen

    def write(self, request: ValidRequest) -> None:
        self._seen(request)

    def close(self) -> None:
        return None


class CountingPlanOutputs:
    """A PlanOutputs for estimates: counts and samples, writes nothing.

    `keep_invalid` keeps every InvalidLine (validate lists them); the counts by code are kept always.
    `recount_encodings` are the encodings to total every prompt under as well; the texts are counted
    on `token_counter`'s threads, the same pool the planner uses.
    `sample_size` keeps up to that many requests per (endpoint, model) group, a uniform random
    sample of the group's requests that may produce output (reservoir sampling, seeded by `seed`);
    `draw_sample` then picks the final sample across groups.
    """

    def __init__(
        self,
        *,
        keep_invalid: bool = False,
        recount_encodings: Iterable[str] = (),
        token_counter: TokenCountingPool | None = None,
        sample_size: int = 0,
        seed: int = 0,
    ) -> None:
        self.invalid: list[InvalidLine] = []
        self.invalid_by_code: Counter[str] = Counter()
        self._keep_invalid = keep_invalid
        encodings = list(dict.fromkeys(recount_encodings))
        self._recount: dict[str, _Recount] = {}
        if encodings:
            if token_counter is None:
                raise ValueError("recounting under other encodings needs the planner's token_counter")
            self._recount = {
                encoding: _Recount(token_counter.counter_for(encoding), token_counter) for encoding in encodings
            }
        self._sample_size = sample_size
        self._rng = random.Random(seed)
        self._reservoirs: dict[GroupKey, list[SampledRequest]] = {}
        self._may_produce_output: Counter[GroupKey] = Counter()

    # ----- PlanOutputs ---------------------------------------------------------------------------

    def open_shard(self, shard_id: str, url: str, model: str) -> _DiscardingShard:
        return _DiscardingShard(self._seen)

    def invalid_line(self, error: InvalidLine) -> None:
        self.invalid_by_code[error.code] += 1
        if self._keep_invalid:
            self.invalid.append(error)

    # ----- what the estimate reads after the plan ------------------------------------------------

    def recounted_prompt_tokens(self) -> dict[str, int]:
        """Every valid request's prompt tokens under each recount encoding (call after the plan)."""
        return {encoding: recount.total() for encoding, recount in self._recount.items()}

    def draw_sample(self) -> list[SampledRequest]:
        """`sample_size` requests in all, spread over the groups in proportion to their size, in line order."""
        sizes = {key: self._may_produce_output[key] for key in sorted(self._reservoirs)}
        chosen: list[SampledRequest] = []
        for key, count in allocate(sizes, self._sample_size).items():
            chosen.extend(self._rng.sample(self._reservoirs[key], count))
        return sorted(chosen, key=lambda request: request.line)

    # ----- internals -----------------------------------------------------------------------------

    def _seen(self, request: ValidRequest) -> None:
        for encoding, recount in self._recount.items():
            if encoding == request.counter.encoding:
                recount.counted += request.prompt_tokens
            else:
                recount.add(request)
        if self._sample_size and request.max_output_tokens > 0:
            self._offer(request)

    def _offer(self, request: ValidRequest) -> None:
        """Algorithm R: after k requests of a group, each of them is in its reservoir with equal chance."""
        key = (request.url, request.model)
        self._may_produce_output[key] += 1
        seen = self._may_produce_output[key]
        reservoir = self._reservoirs.setdefault(key, [])
        if len(reservoir) < self._sample_size:
            reservoir.append(_sampled(request))
            return
        slot = self._rng.randrange(seen)
        if slot < self._sample_size:
            reservoir[slot] = _sampled(request)


def _sampled(request: ValidRequest) -> SampledRequest:
    return SampledRequest(
        request.line, request.custom_id, request.url, request.model, request.raw, request.max_output_tokens
    )


class _Recount:
    """One encoding's running total; texts go to the counting threads a block at a time."""

    __slots__ = ("counter", "counted", "_pool", "_block", "_pending")

    def __init__(self, counter: TextCounter, pool: TokenCountingPool) -> None:
        self.counter = counter
        self._pool = pool
        self.counted = 0  # tokens known so far: fixed parts, counted texts, same-encoding prompts
        self._block: list[tuple[TextCounter, list[str]]] = []
        self._pending: list[PendingCounts] = []

    def add(self, request: ValidRequest) -> None:
        self.counted += request.fixed_tokens
        self._block.append((self.counter, request.texts))
        if len(self._block) >= _RECOUNT_BLOCK:
            self._pending.append(self._pool.submit(self._block))
            self._block = []
            if len(self._pending) > 1:  # keep at most one block in flight: bounded memory
                self.counted += sum(self._pending.pop(0)())

    def total(self) -> int:
        total = self.counted + sum(sum(result()) for result in self._pending)
        total += sum(self.counter.count_texts(texts) for _, texts in self._block)
        self.counted, self._pending, self._block = total, [], []
        return total


def allocate(sizes: Mapping[GroupKey, int], n: int) -> dict[GroupKey, int]:
    """Split a sample of `n` over groups: one per group first (largest groups first), the rest by
    D'Hondt (proportional to group size), never more than a group holds. Deterministic."""
    keys = sorted(sizes, key=lambda key: (-sizes[key], key))
    shares = dict.fromkeys(keys, 0)
    left = min(n, sum(sizes.values()))
    for key in keys:
        if left and sizes[key]:
            shares[key] = 1
            left -= 1
    while left:
        key = max((k for k in keys if shares[k] < sizes[k]), key=lambda k: sizes[k] / (shares[k] + 1))
        shares[key] += 1
        left -= 1
    return {key: share for key, share in shares.items() if share}


@dataclass(frozen=True, slots=True)
class Measurement:
    """One sampled request sent for real: the output it was assumed to make and the output it made."""

    url: str
    model: str
    assumed_output_tokens: int
    output_tokens: int


def extrapolate_output_tokens(assumed_total: int, requests: int, measured: list[Measurement]) -> int:
    """The group's output tokens, by the ratio estimator: assumed total x (sum real / sum assumed).

    Real output grows with the cap a request sets, so scaling each request's own cap by the
    sampled ratio is sounder than a flat mean per request when caps differ within a group.
    When the sampled caps sum to zero the mean per request is used instead.
    """
    assumed = sum(m.assumed_output_tokens for m in measured)
    real = sum(m.output_tokens for m in measured)
    if assumed > 0:
        return round(assumed_total * real / assumed)
    return round(requests * real / len(measured))


@dataclass(slots=True)
class GroupEstimate:
    endpoint: str
    model: str
    requests: int = 0
    shards: int = 0
    input_tokens: int = 0
    output_tokens_assumed: int = 0
    output_tokens: int = 0
    output_tokens_source: str = OUTPUT_FROM_MAX_TOKENS
    sampled: int = 0
    cost_usd_batch: float = 0.0
    cost_usd_realtime: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelComparison:
    """The file's requests priced as if every one of them used `model`."""

    model: str
    encoding: str
    input_tokens: int
    output_tokens: int
    cost_usd_batch: float
    cost_usd_realtime: float


@dataclass(slots=True)
class Estimate:
    input_lines: int
    valid: int
    invalid: int
    invalid_by_code: dict[str, int]
    groups: list[GroupEstimate]
    comparisons: list[ModelComparison] = field(default_factory=list)

    @property
    def shards(self) -> int:
        return sum(group.shards for group in self.groups)

    @property
    def input_tokens(self) -> int:
        return sum(group.input_tokens for group in self.groups)

    @property
    def output_tokens(self) -> int:
        return sum(group.output_tokens for group in self.groups)

    @property
    def output_tokens_assumed(self) -> int:
        return sum(group.output_tokens_assumed for group in self.groups)

    @property
    def output_tokens_source(self) -> str:
        sampled = any(group.output_tokens_source == OUTPUT_FROM_SAMPLE for group in self.groups)
        return OUTPUT_FROM_SAMPLE if sampled else OUTPUT_FROM_MAX_TOKENS

    @property
    def cost_usd_batch(self) -> float:
        return sum(group.cost_usd_batch for group in self.groups)

    @property
    def cost_usd_realtime(self) -> float:
        return sum(group.cost_usd_realtime for group in self.groups)


def build_estimate(
    summary: PlanSummary,
    prices: PriceBook,
    *,
    invalid_by_code: Mapping[str, int],
    measured: Iterable[Measurement] = (),
) -> Estimate:
    """Groups from the plan's shards; output tokens from the sample where a group was measured."""
    groups: dict[GroupKey, GroupEstimate] = {}
    for shard in summary.shards:
        group = groups.setdefault((shard.url, shard.model), GroupEstimate(shard.url, shard.model))
        group.requests += shard.requests
        group.shards += 1
        group.input_tokens += shard.prompt_tokens
        group.output_tokens_assumed += shard.max_output_tokens
    by_group: dict[GroupKey, list[Measurement]] = {}
    for measurement in measured:
        by_group.setdefault((measurement.url, measurement.model), []).append(measurement)
    for key, group in groups.items():
        sample = by_group.get(key)
        group.output_tokens = group.output_tokens_assumed
        if sample:
            group.output_tokens = extrapolate_output_tokens(group.output_tokens_assumed, group.requests, sample)
            group.output_tokens_source = OUTPUT_FROM_SAMPLE
            group.sampled = len(sample)
        group.cost_usd_batch = prices.batch_cost(group.model, group.input_tokens, group.output_tokens)
        group.cost_usd_realtime = prices.realtime_cost(group.model, group.input_tokens, group.output_tokens)
    return Estimate(
        input_lines=summary.input_lines,
        valid=summary.valid,
        invalid=summary.invalid,
        invalid_by_code=dict(sorted(invalid_by_code.items())),
        groups=sorted(groups.values(), key=lambda g: (g.endpoint, g.model)),
    )


def compare_models(
    estimate: Estimate, prices: PriceBook, models: Iterable[str], input_tokens_by_encoding: Mapping[str, int]
) -> list[ModelComparison]:
    """Each model priced on the file's output tokens and its own encoding's prompt-token total.

    Output tokens are the file's (assumed or measured with the file's models): another model's
    answers may be longer or shorter, which no count can know before it is asked.
    """
    comparisons = []
    for model in models:
        price = prices.price_for(model)
        if price is None:
            raise KeyError(model)
        input_tokens = input_tokens_by_encoding[price.encoding]
        output_tokens = estimate.output_tokens
        comparisons.append(
            ModelComparison(
                model=model,
                encoding=price.encoding,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd_batch=prices.batch_cost(model, input_tokens, output_tokens),
                cost_usd_realtime=prices.realtime_cost(model, input_tokens, output_tokens),
            )
        )
    return comparisons

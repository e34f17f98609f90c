"""Composition: the domain's objects built from the settings, with the engines plugged in.

The one place that knows all three: settings are plain values, the domain holds the rules and
never reads settings, the engines make the rules fast. The wiring (handlers/dependencies.py) and
the local run call these instead of building the domain themselves, so every step validates,
counts and prices the same way.
"""

from __future__ import annotations

from batchline.domain.answer_cache import AnswerLookup
from batchline.domain.model_limits import DEFAULT_LIMITS, ModelTable
from batchline.domain.planning import AnswerReuse, Planner, PlanOutputs, ReuseOutputs
from batchline.domain.pricing import PriceBook
from batchline.domain.request_line import RequestValidator
from batchline.domain.tokens import TokenCountingPool
from batchline.price_table import maintained_table
from batchline.settings import BATCH_ENDPOINTS, Settings


def price_book(settings: Settings) -> PriceBook:
    """The `pricing` setting over the maintained price table; `batch_discount` where a price has no batch rate."""
    return PriceBook(settings.pricing, settings.batch_discount, maintained_table())


def model_table(settings: Settings) -> ModelTable:
    """The built-in model limits, with the `model_limits` setting added or replacing them."""
    return ModelTable({**DEFAULT_LIMITS, **settings.model_limits})


def validator_for(settings: Settings) -> RequestValidator:
    """The validator every step uses: the same endpoints, prices, model limits, output assumption and line limit."""
    # The engines load here, not with this module: the emulator reads prices and limits from it and
    # must count tokens without the project's counter, so that it can catch that counter's mistakes.
    from batchline.engines import tokenization

    return RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(settings),
        models=model_table(settings),
        assumed_output_tokens=settings.assumed_output_tokens,
        max_line_bytes=settings.shard_max_bytes - 1,  # a line and its newline must fit in a shard
        token_counters=tokenization.token_counter,
    )


def planner_for(
    settings: Settings,
    *,
    outputs: PlanOutputs,
    token_counter: TokenCountingPool,
    answers: AnswerLookup | None = None,
    kept_back: ReuseOutputs | None = None,
) -> Planner:
    """The planner; with `answers` (the cache) and `kept_back` (where the requests not sent go), one
    that sends only what has no answer yet (see domain/answer_cache.py)."""
    from batchline.engines.custom_ids import CustomIdRegistry

    reuse = None
    if answers is not None and kept_back is not None:
        # The registry of custom_ids serves for the request keys too: unique, bounded, a repeat told its first line.
        reuse = AnswerReuse(lookup=answers, outputs=kept_back, keys=CustomIdRegistry())

    return Planner(
        validator=validator_for(settings),
        prices=price_book(settings),
        outputs=outputs,
        max_requests=settings.shard_max_requests,
        max_bytes=settings.shard_max_bytes,
        token_counter=token_counter,
        custom_ids=CustomIdRegistry(),
        max_prompt_tokens=settings.batch_queue.limit_for,
        reuse=reuse,
    )

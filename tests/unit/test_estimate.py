"""Estimates come from the planner's own counts; samples are reproducible and spread over the groups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import tiktoken
from batchline.composition import planner_for, price_book
from batchline.domain.estimate import (
    OUTPUT_FROM_MAX_TOKENS,
    OUTPUT_FROM_SAMPLE,
    CountingPlanOutputs,
    Measurement,
    allocate,
    build_estimate,
    compare_models,
    extrapolate_output_tokens,
)
from batchline.domain.planning import PlanSummary, ShardPlan
from batchline.domain.request_line import iter_physical_lines
from batchline.engines.tokenization import ParallelTokenCounter
from batchline.settings import load_settings
from lines import BAD_LINES, chat, embedding, response

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
def token_pool() -> Iterator[ParallelTokenCounter]:
    pool = ParallelTokenCounter(2)
    yield pool
    pool.close()


def plan(lines: list[str], pool: ParallelTokenCounter, **options):
    settings = load_settings({"shard_max_requests": 7})
    outputs = CountingPlanOutputs(token_counter=pool, **options)
    summary = planner_for(settings, outputs=outputs, token_counter=pool).run(
        iter_physical_lines([("\n".join(lines) + "\n").encode()])
    )
    return summary, outputs


def _summary_of_one_chat_shard() -> PlanSummary:
    shard = ShardPlan("00001", CHAT, "gpt-4o-mini", requests=10, prompt_tokens=1000, max_output_tokens=500)
    return PlanSummary(input_lines=10, valid=10, prompt_tokens=1000, max_output_tokens=500, shards=[shard])


def test_the_estimate_sums_the_planners_shards_per_endpoint_and_model(token_pool):
    lines = [chat(f"c{i}") for i in range(20)] + [embedding(f"e{i}") for i in range(5)] + [BAD_LINES[0][0]]
    summary, outputs = plan(lines, token_pool)

    estimate = build_estimate(summary, price_book(load_settings()), invalid_by_code=outputs.invalid_by_code)

    chat_group, embedding_group = estimate.groups
    assert (chat_group.requests, chat_group.shards) == (20, 3)  # 7 + 7 + 6
    assert (embedding_group.requests, embedding_group.shards) == (5, 1)
    assert estimate.shards == len(summary.shards) == 4
    assert estimate.input_tokens == summary.prompt_tokens
    assert chat_group.output_tokens == chat_group.output_tokens_assumed == 20 * 20  # max_tokens of each line
    assert estimate.cost_usd_batch == pytest.approx(summary.estimated_cost_usd)
    assert estimate.cost_usd_realtime == pytest.approx(summary.estimated_cost_usd_if_realtime)
    assert estimate.output_tokens_source == OUTPUT_FROM_MAX_TOKENS
    assert (estimate.invalid, estimate.invalid_by_code) == (1, {"invalid_json": 1})


def test_prompts_recounted_under_another_encoding_match_tiktoken(token_pool):
    texts = [f"Colour number {i}: ünïcödé and emoji 🤔 {'word ' * (i % 9)}" for i in range(5000)]
    lines = [chat(f"c{i}", text) for i, text in enumerate(texts)] + [embedding("e", "a red kettle")]
    summary, outputs = plan(lines, token_pool, recount_encodings=["cl100k_base", "o200k_base"])

    recounted = outputs.recounted_prompt_tokens()

    cl100k = tiktoken.get_encoding("cl100k_base")
    per_chat = 3 + 3 + len(cl100k.encode("user"))  # reply priming, one message, its role
    assert recounted["cl100k_base"] == sum(per_chat + len(cl100k.encode(t)) for t in texts) + len(
        cl100k.encode("a red kettle")
    )
    assert recounted["o200k_base"] != recounted["cl100k_base"]
    o200k = tiktoken.get_encoding("o200k_base")
    chat_tokens = summary.prompt_tokens - len(cl100k.encode("a red kettle"))  # the embedding model counts in cl100k
    assert recounted["o200k_base"] == chat_tokens + len(o200k.encode("a red kettle"))


def test_another_model_is_priced_on_its_own_encodings_count_and_the_files_output():
    prices = price_book(load_settings())
    estimate = build_estimate(_summary_of_one_chat_shard(), prices, invalid_by_code={})

    (gpt35,) = compare_models(estimate, prices, ["gpt-3.5-turbo"], {"cl100k_base": 1234})

    assert (gpt35.encoding, gpt35.input_tokens, gpt35.output_tokens) == ("cl100k_base", 1234, 500)
    assert gpt35.cost_usd_realtime == pytest.approx((1234 * 0.50 + 500 * 1.50) / 1e6)
    assert gpt35.cost_usd_batch == pytest.approx(gpt35.cost_usd_realtime / 2)


def test_sampled_output_scales_the_assumed_output_by_the_measured_ratio():
    prices = price_book(load_settings())
    measured = [Measurement(CHAT, "gpt-4o-mini", 50, 10), Measurement(CHAT, "gpt-4o-mini", 50, 30)]

    estimate = build_estimate(_summary_of_one_chat_shard(), prices, invalid_by_code={}, measured=measured)

    (group,) = estimate.groups
    assert (group.output_tokens_assumed, group.output_tokens, group.sampled) == (500, 200, 2)  # 500 x 40/100
    assert estimate.output_tokens_source == group.output_tokens_source == OUTPUT_FROM_SAMPLE
    assert group.cost_usd_realtime == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)


def test_extrapolation_falls_back_to_the_mean_when_the_sampled_caps_are_zero():
    assert extrapolate_output_tokens(0, 10, [Measurement(CHAT, "m", 0, 3), Measurement(CHAT, "m", 0, 5)]) == 40


def test_a_sample_gives_every_group_one_request_then_splits_the_rest_by_size():
    sizes = {(CHAT, "a"): 900, (CHAT, "b"): 90, (CHAT, "c"): 10}

    assert allocate(sizes, 10) == {(CHAT, "a"): 8, (CHAT, "b"): 1, (CHAT, "c"): 1}
    assert allocate(sizes, 2) == {(CHAT, "a"): 1, (CHAT, "b"): 1}
    assert allocate({(CHAT, "a"): 3, (CHAT, "b"): 1}, 50) == {(CHAT, "a"): 3, (CHAT, "b"): 1}
    assert allocate(sizes, 0) == {}


def test_the_sample_is_reproducible_from_its_seed_and_never_holds_requests_without_output(token_pool):
    lines = [chat(f"c{i}") for i in range(300)] + [response(f"r{i}") for i in range(60)]
    lines += [embedding(f"e{i}") for i in range(100)]

    def draw(seed: int) -> list[str]:
        _, outputs = plan(lines, token_pool, sample_size=12, seed=seed)
        return [request.custom_id for request in outputs.draw_sample()]

    first, again, other = draw(1), draw(1), draw(2)

    assert first == again and first != other
    assert len(first) == 12 and len(set(first)) == 12
    assert Counter(custom_id[0] for custom_id in first) == {"c": 10, "r": 2}  # embeddings make no output


def test_the_sample_covers_the_whole_file_not_only_its_start(token_pool):
    lines = [chat(f"c{i}") for i in range(2000)]
    _, outputs = plan(lines, token_pool, sample_size=50, seed=3)

    picked = [request.line for request in outputs.draw_sample()]

    assert picked == sorted(picked)
    assert min(picked) < 500 and max(picked) > 1500

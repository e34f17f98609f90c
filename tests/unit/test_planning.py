"""Planning groups requests by (endpoint, model) and cuts shards within the Batch API's limits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from batchline.composition import model_table, price_book
from batchline.domain.planning import Planner, PlanSummary, decode_manifest_entry, encode_manifest_entry
from batchline.domain.request_line import RequestValidator, iter_physical_lines
from batchline.engines.custom_ids import CustomIdRegistry
from batchline.engines.tokenization import ParallelTokenCounter, token_counter
from batchline.settings import BATCH_ENDPOINTS, load_settings
from fakes import MemoryPlanOutputs
from lines import BAD_LINES, chat, embedding, response


@pytest.fixture
def token_pool() -> Iterator[ParallelTokenCounter]:
    pool = ParallelTokenCounter(2)
    yield pool
    pool.close()


def plan(
    lines: list[str],
    token_pool,
    *,
    max_requests: int = 50_000,
    max_bytes: int = 209_715_200,
    max_prompt_tokens=None,
    custom_ids: CustomIdRegistry | None = None,
):
    settings = load_settings()
    outputs = MemoryPlanOutputs()
    planner = Planner(
        validator=RequestValidator(
            endpoints=BATCH_ENDPOINTS,
            prices=price_book(settings),
            models=model_table(settings),
            assumed_output_tokens=100,
            max_line_bytes=max_bytes - 1,
            token_counters=token_counter,
        ),
        prices=price_book(settings),
        outputs=outputs,
        max_requests=max_requests,
        max_bytes=max_bytes,
        token_counter=token_pool,
        max_prompt_tokens=max_prompt_tokens,
        custom_ids=custom_ids if custom_ids is not None else CustomIdRegistry(),
    )
    data = ("\n".join(lines) + "\n").encode()
    summary: PlanSummary = planner.run(iter_physical_lines([data]))
    return summary, outputs


def test_requests_are_grouped_by_endpoint_and_model_in_input_order(token_pool):
    lines = [chat("c1"), embedding("e1"), chat("c2", model="gpt-4o"), chat("c3"), response("r1"), embedding("e2")]
    summary, outputs = plan(lines, token_pool)
    groups = {(s.url, s.model): [r.custom_id for r in s.requests] for s in outputs.shards.values()}
    assert groups == {
        ("/v1/chat/completions", "gpt-4o-mini"): ["c1", "c3"],
        ("/v1/embeddings", "text-embedding-3-small"): ["e1", "e2"],
        ("/v1/chat/completions", "gpt-4o"): ["c2"],
        ("/v1/responses", "gpt-4o-mini"): ["r1"],
    }
    assert all(shard.closed for shard in outputs.shards.values())
    assert (summary.input_lines, summary.valid, summary.invalid) == (6, 6, 0)


def test_shards_never_exceed_the_request_limit(token_pool):
    summary, outputs = plan([chat(f"c{i}") for i in range(25)], token_pool, max_requests=10)
    assert [s.requests for s in summary.shards] == [10, 10, 5]
    assert [len(s.requests) for s in outputs.shards.values()] == [10, 10, 5]
    assert summary.shards[1].first_line == 11 and summary.shards[1].last_line == 20


def test_shards_never_exceed_the_byte_limit(token_pool):
    lines = [chat(f"c{i}") for i in range(30)]
    line_bytes = len(lines[0]) + 1
    summary, _ = plan(lines, token_pool, max_bytes=line_bytes * 4 + 2)
    assert all(s.bytes <= line_bytes * 4 + 2 for s in summary.shards)
    assert sum(s.requests for s in summary.shards) == 30


def test_a_shard_never_holds_more_prompt_tokens_than_its_models_enqueued_token_limit(token_pool):
    lines = [chat(f"c{i}") for i in range(20)] + [chat(f"big{i}", model="gpt-4o") for i in range(3)]
    one = plan(lines[:1], token_pool)[0].prompt_tokens
    limits = {"gpt-4o-mini": one * 6 + 1, "gpt-4o": 10**9}
    summary, _ = plan(lines, token_pool, max_prompt_tokens=limits.__getitem__)
    mini = [s for s in summary.shards if s.model == "gpt-4o-mini"]
    assert [s.requests for s in mini] == [6, 6, 6, 2]
    assert all(s.prompt_tokens <= limits["gpt-4o-mini"] for s in mini)
    assert [s.requests for s in summary.shards if s.model == "gpt-4o"] == [3]


def test_duplicate_custom_id_is_an_error_on_the_later_line_and_the_first_is_kept(token_pool):
    summary, outputs = plan([chat("same"), embedding("other"), chat("same", "again")], token_pool)
    assert [(e.line, e.code) for e in outputs.invalid] == [(3, "duplicate_custom_id")]
    assert "line 1" in outputs.invalid[0].message
    assert summary.valid == 2


def test_a_repeat_far_from_its_first_use_is_still_an_error_naming_both_lines_after_a_spill(token_pool):
    # Given a registry that keeps only 50 ids in memory, so the first use is long spilled to disk
    registry = CustomIdRegistry(memory_ids=50, filter_bytes=1 << 12)
    lines = [chat(f"c{i}") for i in range(6_000)] + [chat("c7", "again"), embedding("c5999", "late")]
    # When the file is planned
    summary, outputs = plan(lines, token_pool, custom_ids=registry)
    # Then both repeats are invalid lines naming the line of the first use, and neither reached a shard
    assert [(e.line, e.code, e.custom_id) for e in outputs.invalid] == [
        (6_001, "duplicate_custom_id", "c7"),
        (6_002, "duplicate_custom_id", "c5999"),
    ]
    assert "line 8" in outputs.invalid[0].message and "line 6000" in outputs.invalid[1].message
    written = [r.custom_id for shard in outputs.shards.values() for r in shard.requests]
    assert len(written) == 6_000 == len(set(written)) and summary.valid == 6_000
    assert registry._spill is None  # the spill file is gone once the plan is done


def test_invalid_lines_are_reported_in_line_order_across_blocks_whatever_made_them_invalid(token_pool):
    lines = []
    for i in range(5_000):
        lines.append(chat(f"c{i}") if i % 7 else chat(f"c{i // 2}"))  # every 7th repeats an earlier id
        if i % 1_000 == 500:
            lines.append('{"custom_id": "broken"')
    summary, outputs = plan(lines, token_pool, custom_ids=CustomIdRegistry(memory_ids=300, filter_bytes=1 << 10))
    reported = [e.line for e in outputs.invalid]
    assert reported == sorted(reported) and len(reported) == summary.invalid
    assert {e.code for e in outputs.invalid} == {"duplicate_custom_id", "invalid_json"}
    assert summary.valid + summary.invalid == summary.input_lines == len(lines)
    written = [r.custom_id for shard in outputs.shards.values() for r in shard.requests]
    assert len(written) == len(set(written)) == summary.valid


def test_bad_lines_never_sink_the_valid_ones(token_pool):
    lines = [chat("ok-1")] + [raw for raw, _ in BAD_LINES] + [chat("ok-2")]
    summary, outputs = plan(lines, token_pool)
    assert summary.valid == 2 and summary.invalid == len(BAD_LINES)
    assert [e.line for e in outputs.invalid] == list(range(2, 2 + len(BAD_LINES)))
    assert [e.code for e in outputs.invalid] == [code for _, code in BAD_LINES]


def test_token_totals_and_estimates_come_from_exact_counts_and_the_price_table(token_pool):
    summary, outputs = plan([chat(f"c{i}", f"message {i}") for i in range(3000)], token_pool)
    counter = token_counter("o200k_base")
    expected = sum(
        counter.prompt_tokens("/v1/chat/completions", {"messages": [{"role": "user", "content": f"message {i}"}]})
        for i in range(3000)
    )
    assert summary.prompt_tokens == expected
    assert [r.prompt_tokens for r in outputs.shards["00001"].requests][:2] == [
        counter.prompt_tokens("/v1/chat/completions", {"messages": [{"role": "user", "content": f"message {i}"}]})
        for i in range(2)
    ]
    prices = price_book(load_settings())
    assert summary.estimated_cost_usd == pytest.approx(prices.batch_cost("gpt-4o-mini", expected, 3000 * 20))
    assert summary.estimated_cost_usd_if_realtime == pytest.approx(2 * summary.estimated_cost_usd)


def test_manifest_entries_round_trip_any_custom_id():
    for custom_id in ("plain", "tab\there", 'quote"and\\slash', "ünïcödé ✓"):
        assert decode_manifest_entry(encode_manifest_entry(42, custom_id)) == (42, custom_id)


def test_manifest_entries_are_the_same_bytes_as_json_dumps_writes_for_every_kind_of_id():
    ids = ["plain", "with space", "tab\there", "new\nline", 'q"uote', "back\\slash", "\x7f\x85\xa0", "\u2028", "✓ 🤔"]
    for custom_id in ids:
        expected = f"7\t{json.dumps(custom_id, ensure_ascii=False)}\n".encode()
        assert encode_manifest_entry(7, custom_id) == expected


# -- shard lines the provider reads as one line each ----------------------------------------------
def _line_with(custom_id: str, *, raw_cr: bool = False) -> str:
    """A chat line whose custom_id is written raw (json.dumps would escape U+2028), with a raw CR as
    JSON white space when asked."""
    line = chat("ID").replace('"ID"', '"' + custom_id + '"')
    return line.replace(', "method"', ',\r"method"') if raw_cr else line


@pytest.mark.parametrize(
    ("custom_id", "raw_cr"),
    [("id\u2028one", False), ("id\u2029two", False), ("id\x85three", False), ("plain", True), ("all\u2028\x85", True)],
    ids=["U+2028", "U+2029", "U+0085", "CR-as-white-space", "all-at-once"],
)
def test_shard_lines_hold_no_raw_line_separator_and_keep_the_custom_id(token_pool, custom_id, raw_cr):
    """The provider splits files as str.splitlines does: each shard line must stay one line for it."""
    source = _line_with(custom_id, raw_cr=raw_cr)
    assert len(source.splitlines()) > 1, "the input line itself would be split: the case tests nothing"

    summary, outputs = plan([chat("before"), source, chat("after")], token_pool)

    assert (summary.valid, summary.invalid) == (3, 0)
    (shard,) = outputs.shards.values()
    written = [request.raw.decode() for request in shard.requests]
    assert all(len((line + "\n").splitlines()) == 1 for line in written)
    assert [json.loads(line)["custom_id"] for line in written] == ["before", custom_id, "after"]
    assert json.loads(written[1]) == json.loads(source), "nothing else of the request changed"
    manifest_entry = encode_manifest_entry(shard.requests[1].line, shard.requests[1].custom_id)
    assert decode_manifest_entry(manifest_entry) == (2, custom_id), "outputs join on the same custom_id"
    assert summary.shards[0].bytes == sum(len(line.encode()) + 1 for line in written)


def test_a_line_that_escaping_makes_too_long_for_a_shard_is_reported_not_planned(token_pool):
    source = _line_with("x" + "\u2028" * 40)  # 120 bytes of separators become 240 of escapes
    limit = len(source.encode()) + 60

    summary, outputs = plan([chat("a"), source], token_pool, max_bytes=limit)

    assert [(e.line, e.code) for e in outputs.invalid] == [(2, "line_too_large")]
    assert [r.custom_id for s in outputs.shards.values() for r in s.requests] == ["a"]

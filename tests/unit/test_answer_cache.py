"""The answer cache's rules: what a request's key is made of, and a planner that sends only what has no answer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson
import pytest
from batchline.composition import model_table, price_book
from batchline.domain.answer_cache import (
    ROUTE_CACHE,
    InvalidCacheSettingError,
    cache_requested,
    cached_result,
    pack_answer,
    request_hash,
)
from batchline.domain.planning import AnswerReuse, Planner, PlanSummary
from batchline.domain.request_line import RequestValidator, ValidRequest, iter_physical_lines
from batchline.engines.custom_ids import CustomIdRegistry
from batchline.engines.tokenization import ParallelTokenCounter, token_counter
from batchline.settings import BATCH_ENDPOINTS, load_settings
from fakes import MemoryPlanOutputs
from lines import chat, embedding


def test_the_key_is_the_url_and_body_whatever_the_custom_id_key_order_or_spacing():
    line = chat("a", "Classify: late parcel.")
    reordered = json.dumps(
        {"body": json.loads(line)["body"], "url": "/v1/chat/completions", "custom_id": "z"}, indent=2
    )
    assert request_hash(line.encode()) == request_hash(reordered.encode())
    assert len(request_hash(line.encode())) == 64


def test_a_changed_body_or_endpoint_is_another_key():
    base = request_hash(chat("a", "one").encode())
    assert request_hash(chat("a", "two").encode()) != base
    assert request_hash(chat("a", "one", model="gpt-4o").encode()) != base
    assert request_hash(chat("a", "one", temperature=0.5).encode()) != base
    assert request_hash(embedding("a", "one").encode()) != base


def test_a_kept_answer_comes_back_as_its_lines_result_on_route_cache():
    record = {"custom_id": "x", "line": 4, "route": "batch", "model": "m", "response": {"id": 1}, "usage": {"a": 1}}
    packed = pack_answer(record)
    assert packed is not None
    assert cached_result(custom_id="y", line=9, packed=packed) == {
        "custom_id": "y",
        "line": 9,
        "route": ROUTE_CACHE,
        "model": "m",
        "response": {"id": 1},
        "usage": {"a": 1},
    }


def test_an_answer_too_big_for_a_dynamodb_item_is_not_kept():
    import os

    noise = os.urandom(600_000).hex()  # hex of random bytes: half of it compresses away, not more
    assert pack_answer({"model": "m", "response": {"text": noise}, "usage": None}) is None


def test_the_upload_turns_the_cache_off_with_its_metadata_and_nothing_else():
    assert cache_requested({}) and cache_requested({"batchline-cache": "on"})
    assert not cache_requested({"batchline-cache": "off"})
    with pytest.raises(InvalidCacheSettingError):
        cache_requested({"batchline-cache": "maybe"})


# -- the planner with a fake cache ----------------------------------------------------------------
class FakeAnswers:
    def __init__(self, known: dict[str, bytes]) -> None:
        self._known = known
        self.calls: list[list[str]] = []

    def known(self, keys: list[str]) -> dict[str, bytes]:
        self.calls.append(keys)
        return {key: self._known[key] for key in keys if key in self._known}


class KeptBack:
    """The planner's ReuseOutputs, remembering (line, ...) of what it was given."""

    def __init__(self) -> None:
        self.hits: list[tuple[int, str]] = []
        self.repeats: list[tuple[int, int]] = []
        self.keys: list[tuple[int, str]] = []

    def cached(self, request: ValidRequest, packed: bytes) -> None:
        record = cached_result(custom_id=request.custom_id, line=request.line, packed=packed)
        self.hits.append((record["line"], record["custom_id"]))

    def duplicate(self, request: ValidRequest, first_line: int) -> None:
        self.repeats.append((request.line, first_line))

    def sent(self, requests: list[ValidRequest], keys: list[str]) -> None:
        self.keys.extend((request.line, key) for request, key in zip(requests, keys, strict=True))


@pytest.fixture
def token_pool() -> Iterator[ParallelTokenCounter]:
    pool = ParallelTokenCounter(2)
    yield pool
    pool.close()


def plan(lines: list[str], token_pool, answers: FakeAnswers | None) -> tuple[PlanSummary, MemoryPlanOutputs, KeptBack]:
    settings = load_settings()
    outputs, kept = MemoryPlanOutputs(), KeptBack()
    planner = Planner(
        validator=RequestValidator(
            endpoints=BATCH_ENDPOINTS,
            prices=price_book(settings),
            models=model_table(settings),
            assumed_output_tokens=100,
            max_line_bytes=1 << 20,
            token_counters=token_counter,
        ),
        prices=price_book(settings),
        outputs=outputs,
        max_requests=50_000,
        max_bytes=1 << 21,
        token_counter=token_pool,
        custom_ids=CustomIdRegistry(),
        reuse=None if answers is None else AnswerReuse(lookup=answers, outputs=kept, keys=CustomIdRegistry()),
    )
    summary = planner.run(iter_physical_lines([("\n".join(lines) + "\n").encode()]))
    return summary, outputs, kept


def sent_ids(outputs: MemoryPlanOutputs) -> list[str]:
    return [request.custom_id for shard in outputs.shards.values() for request in shard.requests]


def test_known_answers_and_repeats_stay_out_of_the_shards_and_every_line_is_accounted(token_pool):
    lines = [chat(f"r{i}", f"question {i}") for i in range(10)]
    lines[6] = chat("r6", "question 2")  # asks what line 3 asks
    lines[9] = chat("r9", "question 2")  # and again
    answer = pack_answer({"model": "gpt-4o-mini", "response": {"ok": True}, "usage": {"prompt_tokens": 3}})
    assert answer is not None
    known = {request_hash(lines[0].encode()): answer, request_hash(lines[4].encode()): answer}
    answers = FakeAnswers(known)

    summary, outputs, kept = plan(lines, token_pool, answers)

    assert sent_ids(outputs) == ["r1", "r2", "r3", "r5", "r7", "r8"]
    assert kept.hits == [(1, "r0"), (5, "r4")]
    assert kept.repeats == [(7, 3), (10, 3)]
    assert [line for line, _ in kept.keys] == [2, 3, 4, 6, 8, 9]
    assert (summary.input_lines, summary.valid, summary.cached, summary.duplicates) == (10, 6, 2, 2)
    assert summary.valid + summary.cached + summary.duplicates + summary.invalid == summary.input_lines
    assert len(answers.calls) == 1 and len(answers.calls[0]) == 8, "one lookup per block, repeats not looked up"
    assert summary.shards[0].requests == 6, "the shard, its estimate and the budget hold are only what is sent"


def test_without_the_cache_every_line_is_sent_even_a_repeat(token_pool):
    lines = [chat("a", "same"), chat("b", "same"), chat("c", "other")]
    summary, outputs, _ = plan(lines, token_pool, None)
    assert sent_ids(outputs) == ["a", "b", "c"]
    assert (summary.valid, summary.cached, summary.duplicates) == (3, 0, 0)


def test_a_repeated_custom_id_stays_an_invalid_line_not_a_duplicate(token_pool):
    lines = [chat("a", "same"), chat("a", "same"), chat("b", "same")]
    summary, outputs, kept = plan(lines, token_pool, FakeAnswers({}))
    assert sent_ids(outputs) == ["a"]
    assert summary.invalid == 1 and kept.repeats == [(3, 1)]


def test_a_file_answered_entirely_from_the_cache_has_no_shard(token_pool):
    lines = [chat(f"r{i}", f"q{i}") for i in range(3)]
    answer = pack_answer({"model": "gpt-4o-mini", "response": {}, "usage": None})
    assert answer is not None
    summary, outputs, kept = plan(lines, token_pool, FakeAnswers({request_hash(x.encode()): answer for x in lines}))
    assert summary.shards == [] and summary.valid == 0 and summary.cached == 3
    assert summary.estimated_cost_usd == 0
    assert orjson.loads(orjson.dumps(kept.hits)) == [[1, "r0"], [2, "r1"], [3, "r2"]]

"""The sample generators feed the demo, the benchmark and the shipped example: valid and reproducible."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from batchline.composition import model_table, price_book
from batchline.domain.request_line import RequestValidator, ValidRequest
from batchline.engines.tokenization import token_counter
from batchline.settings import BATCH_ENDPOINTS, load_settings

from batchline_local.samples import (
    chat_requests,
    embedding_requests,
    mixed_example,
    summary_requests,
    write_jsonl,
)

GENERATORS = [chat_requests, embedding_requests, summary_requests, mixed_example]
SHIPPED_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "feedback-1k.jsonl"


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    settings = load_settings()
    return RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(settings),
        models=model_table(settings),
        assumed_output_tokens=settings.assumed_output_tokens,
        max_line_bytes=settings.shard_max_bytes,
        token_counters=token_counter,
    )


@pytest.mark.parametrize("generate", GENERATORS, ids=lambda g: g.__name__)
def test_same_seed_gives_the_same_lines_and_another_seed_different_ones(generate) -> None:
    assert list(generate(50, seed=3)) == list(generate(50, seed=3))
    assert list(generate(50, seed=3)) != list(generate(50, seed=4))


@pytest.mark.parametrize("generate", GENERATORS, ids=lambda g: g.__name__)
def test_generators_stream_instead_of_building_every_line(generate) -> None:
    lines = generate(10**12, seed=0)  # a list this long could never be built

    assert isinstance(lines, Iterator)
    assert isinstance(next(lines), bytes)


def test_every_generated_line_is_a_valid_request(validator: RequestValidator) -> None:
    lines = [*mixed_example(400, seed=11), *chat_requests(100, seed=11)]

    outcomes = [validator.validate(number, raw) for number, raw in enumerate(lines, start=1)]

    assert [o for o in outcomes if type(o) is not ValidRequest] == []


def test_mixed_example_covers_both_models_on_all_three_endpoints() -> None:
    records = [orjson.loads(line) for line in mixed_example(300, seed=5)]

    pairs = Counter((record["url"], record["body"]["model"]) for record in records)

    assert set(pairs) == {
        ("/v1/chat/completions", "gpt-4o-mini"),
        ("/v1/embeddings", "text-embedding-3-small"),
        ("/v1/responses", "gpt-4o-mini"),
    }


def test_custom_ids_are_unique_within_a_mixed_file() -> None:
    custom_ids = [orjson.loads(line)["custom_id"] for line in mixed_example(2000, seed=2)]

    assert len(set(custom_ids)) == len(custom_ids)


def test_feedback_texts_are_10_to_80_words_and_rarely_repeat() -> None:
    texts = [orjson.loads(line)["body"]["messages"][1]["content"] for line in chat_requests(1000, seed=8)]

    lengths = [len(text.split()) for text in texts]
    assert min(lengths) >= 10
    assert max(lengths) <= 80
    assert len(set(texts)) > 990


def test_write_jsonl_ends_every_line_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"

    written = write_jsonl(path, chat_requests(5000, seed=1))

    assert written == 5000
    assert path.read_bytes() == b"".join(line + b"\n" for line in chat_requests(5000, seed=1))


def test_shipped_example_is_what_its_readme_command_makes_and_all_valid(validator: RequestValidator) -> None:
    shipped = SHIPPED_EXAMPLE.read_bytes()

    assert shipped == b"".join(line + b"\n" for line in mixed_example(1200, seed=1))
    assert len(shipped) < 1_000_000
    assert all(
        type(validator.validate(number, raw)) is ValidRequest
        for number, raw in enumerate(shipped.splitlines(), start=1)
    )

"""Every line of an input file is either a request that can be sent or an error that says why."""

from __future__ import annotations

import json

import pytest
from batchline.composition import model_table, price_book
from batchline.domain.request_line import InvalidLine, RequestValidator, ValidRequest, iter_physical_lines
from batchline.engines.tokenization import token_counter
from batchline.settings import BATCH_ENDPOINTS, load_settings
from lines import BAD_LINES, chat, embedding


@pytest.fixture
def validator() -> RequestValidator:
    settings = load_settings()
    return RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(settings),
        models=model_table(settings),
        assumed_output_tokens=256,
        max_line_bytes=4096,
        token_counters=token_counter,
    )


def test_physical_line_numbers_count_blank_lines_and_survive_bom_crlf_and_trailing_space():
    data = b"\xef\xbb\xbf" + b'{"a": 1}\r\n' + b"\r\n" + b"   \n" + b'{"b": 2}  \t\r\n' + b'{"c": 3}'
    # Chunk boundaries anywhere (even inside the BOM) must not change anything.
    for size in (1, 2, 3, 5, 1000):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(iter_physical_lines(chunks)) == [(1, b'{"a": 1}'), (4, b'{"b": 2}'), (5, b'{"c": 3}')]


def test_a_valid_chat_line_keeps_its_exact_bytes_and_its_output_cap(validator):
    raw = chat("row-1", max_completion_tokens=7).encode()
    outcome = validator.validate(3, raw)
    assert isinstance(outcome, ValidRequest)
    assert (outcome.line, outcome.custom_id, outcome.url, outcome.model) == (
        3,
        "row-1",
        "/v1/chat/completions",
        "gpt-4o-mini",
    )
    assert outcome.raw == raw
    assert outcome.max_output_tokens == 7


def test_embeddings_assume_no_output_tokens(validator):
    outcome = validator.validate(1, embedding("e").encode())
    assert isinstance(outcome, ValidRequest) and outcome.max_output_tokens == 0


@pytest.mark.parametrize(("raw", "code"), BAD_LINES, ids=[code for _, code in BAD_LINES])
def test_each_kind_of_bad_line_gets_its_code_and_a_message_naming_the_problem(validator, raw, code):
    outcome = validator.validate(9, raw.encode())
    assert isinstance(outcome, InvalidLine)
    assert outcome.line == 9
    assert outcome.code == code
    assert outcome.message


def test_a_bad_line_with_a_readable_custom_id_keeps_it(validator):
    outcome = validator.validate(2, json.dumps({"custom_id": "keep-me", "method": "PUT"}).encode())
    assert isinstance(outcome, InvalidLine) and outcome.custom_id == "keep-me"


def test_invalid_utf8_is_reported_as_an_encoding_problem(validator):
    outcome = validator.validate(4, b'{"custom_id": "x\xff"}')
    assert isinstance(outcome, InvalidLine) and outcome.code == "invalid_encoding"


def test_a_line_longer_than_a_shard_may_hold_is_refused(validator):
    outcome = validator.validate(1, chat("big", "word " * 2000).encode())
    assert isinstance(outcome, InvalidLine) and outcome.code == "line_too_large"

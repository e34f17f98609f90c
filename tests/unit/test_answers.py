"""The rule for structured answers: an answer to a request asking for a JSON Schema follows it, or says
where and how it does not."""

from __future__ import annotations

import time

import orjson
import pytest
from batchline.domain.answers import (
    Parsed,
    RoundSchemas,
    SchemaProblem,
    check_answer,
    check_response,
    schema_of,
)

SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "topics": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sentiment", "topics"],
    "additionalProperties": False,
}


def chat_body(schema: dict = SENTIMENT, name: str = "sentiment") -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Classify"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}},
    }


def chat_answer(content: str | None, *, refusal: str | None = None, finish_reason: str = "stop") -> dict:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}], "usage": {}}


def test_an_answer_that_follows_its_schema_is_parsed():
    outcome = check_response(chat_body(), chat_answer('{"sentiment": "positive", "topics": ["price"]}'))
    assert outcome == Parsed({"sentiment": "positive", "topics": ["price"]})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"sentiment": "happy", "topics": []}', "$.sentiment: 'happy' is not one of ['positive', 'negative']"),
        ('{"sentiment": "positive"}', "$: 'topics' is a required property"),
        ('{"sentiment": "positive", "topics": [3]}', "$.topics[0]: 3 is not of type 'string'"),
        (
            '{"sentiment": "negative", "topics": [], "x": 1}',
            "$: Additional properties are not allowed ('x' was unexpected)",
        ),
        ("", "not JSON: Expecting value at char 0"),
        ('{"sentiment": "pos', "not JSON: Unterminated string starting at char 14"),
        ("NaN", "not JSON: NaN is not JSON"),
    ],
)
def test_an_answer_off_its_schema_says_where_and_what(content: str, message: str):
    outcome = check_response(chat_body(), chat_answer(content))
    assert outcome == SchemaProblem("schema_invalid", message)
    assert isinstance(outcome, SchemaProblem) and outcome.retriable


def test_an_answer_cut_at_the_token_cap_says_so():
    outcome = check_response(chat_body(), chat_answer('{"sentiment": "posi', finish_reason="length"))
    assert isinstance(outcome, SchemaProblem) and outcome.message.endswith(
        "(the answer was cut at the output token cap)"
    )


def test_a_refusal_is_a_final_problem_of_its_own():
    outcome = check_response(chat_body(), chat_answer(None, refusal="I can't help with that."))
    assert outcome == SchemaProblem(
        "refusal", "the model refused to answer in schema 'sentiment': I can't help with that."
    )
    assert not outcome.retriable


def test_a_request_without_a_json_schema_has_nothing_to_check():
    plain = {"model": "gpt-4o-mini", "messages": []}
    json_mode = {**plain, "response_format": {"type": "json_object"}}
    for body in (plain, json_mode, {**plain, "response_format": {"type": "text"}}):
        assert check_response(body, chat_answer("hello")) is None


def test_the_responses_endpoint_text_format_is_checked_too():
    body = {
        "model": "gpt-4o-mini",
        "input": "x",
        "text": {"format": {"type": "json_schema", "name": "s", "schema": SENTIMENT}},
    }
    good = {
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": '{"sentiment": "negative", "topics": []}'}]}
        ]
    }
    bad = {"output": [{"type": "message", "content": [{"type": "output_text", "text": '{"topics": []}'}]}]}
    refused = {"output": [{"type": "message", "content": [{"type": "refusal", "refusal": "no"}]}]}
    assert check_response(body, good) == Parsed({"sentiment": "negative", "topics": []})
    assert check_response(body, bad) == SchemaProblem("schema_invalid", "$: 'sentiment' is a required property")
    assert isinstance(check_response(body, refused), SchemaProblem) and check_response(body, refused).code == "refusal"


def test_a_schema_is_compiled_once_and_checking_takes_microseconds():
    first, again = schema_of(chat_body()), schema_of(orjson.loads(orjson.dumps(chat_body())))
    assert first is not None and first is again, "the same schema (by digest) is compiled once"
    other = schema_of(chat_body({**SENTIMENT, "required": ["sentiment"], "properties": SENTIMENT["properties"]}))
    assert other is not None and other.digest != first.digest
    response = chat_answer('{"sentiment": "positive", "topics": ["price", "delivery"]}')
    started = time.perf_counter()
    for _ in range(2000):
        check_answer(first, response)
    per_answer = (time.perf_counter() - started) / 2000
    assert per_answer < 500e-6, f"{per_answer * 1e6:.0f} µs per answer"


def test_a_round_keeps_one_schema_when_all_share_it_and_only_the_odd_ones_by_custom_id():
    def line(custom_id: str, body: dict) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})

    plain = {"model": "gpt-4o-mini", "messages": []}
    shared = RoundSchemas([line(f"c{i}", chat_body()) for i in range(100)])
    assert shared.any and shared._others == {} and shared.schema_for("c7") is schema_of(chat_body())
    mixed = RoundSchemas(
        [line("a", chat_body()), line("b", plain), line("c", chat_body()), line("d", chat_body(name="other"))]
    )
    assert set(mixed._others) == {"b", "d"} and mixed.schema_for("b") is None
    assert mixed.schema_for("c") is schema_of(chat_body()) and mixed.schema_for("d").name == "other"
    none = RoundSchemas([line(f"c{i}", plain) for i in range(10)])
    assert not none.any and none.schema_for("c1") is None

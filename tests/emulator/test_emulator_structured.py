"""Structured outputs through the SDK: json_object and json_schema answers that parse and validate, or a 400."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from .helpers import read_jsonl, start_batch, tiktoken_text_tokens, wait_for_batch

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 12},
        "unit_price": {"type": "number", "exclusiveMinimum": 0, "maximum": 500},
        "gift": {"type": "boolean"},
        "status": {"type": "string", "enum": ["placed", "shipped", "delivered"]},
        "note": {"type": ["string", "null"]},
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"item": {"type": "string"}, "size": {"$ref": "#/$defs/size"}},
                "required": ["item", "size"],
                "additionalProperties": False,
            },
        },
        "delivery": {"anyOf": [{"$ref": "#/$defs/address"}, {"type": "null"}]},
    },
    "required": ["customer", "quantity", "unit_price", "gift", "status", "note", "sku", "lines", "delivery"],
    "additionalProperties": False,
    "$defs": {
        "size": {"type": "string", "enum": ["S", "M", "L"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "postcode": {"type": "string"}},
            "required": ["city", "postcode"],
            "additionalProperties": False,
        },
    },
}


def order_format(schema: dict[str, Any] = ORDER_SCHEMA, *, strict: bool = True) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "order", "schema": schema, "strict": strict}}


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_json_schema_answer_parses_and_validates_against_the_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=ask("Extract the order: two blue mugs for Ana."), response_format=order_format()
    )

    choice = completion.choices[0]
    answer = json.loads(choice.message.content)
    jsonschema.validate(answer, ORDER_SCHEMA)
    assert choice.finish_reason == "stop"
    assert completion.usage.completion_tokens == tiktoken_text_tokens(choice.message.content, "o200k_base")


def test_every_answer_validates_however_the_prompt_varies(client: openai.OpenAI) -> None:
    answers = [
        json.loads(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=ask(f"Order number {i}"), response_format=order_format()
            )
            .choices[0]
            .message.content
        )
        for i in range(25)
    ]

    for answer in answers:
        jsonschema.validate(answer, ORDER_SCHEMA)
    # the choices the schema leaves open are all taken somewhere: both anyOf branches, several enum values
    assert {a["delivery"] is None for a in answers} == {True, False}
    assert len({a["status"] for a in answers}) > 1


def test_the_same_request_gets_the_same_json(client: openai.OpenAI) -> None:
    def content(text: str) -> str:
        return (
            client.chat.completions.create(model="gpt-4o-mini", messages=ask(text), response_format=order_format())
            .choices[0]
            .message.content
        )

    assert content("Order for Ana") == content("Order for Ana") != content("Order for Kwame")


class Step(BaseModel):
    explanation: str
    output: str


class Solution(BaseModel):
    steps: list[Step]
    final_answer: str
    confidence: Literal["low", "medium", "high"]
    checked_by: str | None


def test_the_sdk_parses_the_answer_into_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="gpt-4o-mini", messages=ask("Solve 8x + 7 = -23"), response_format=Solution
    )

    solution = completion.choices[0].message.parsed
    assert isinstance(solution, Solution)
    assert solution.confidence in ("low", "medium", "high")
    assert all(isinstance(step, Step) for step in solution.steps)


def test_json_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=ask("List three colours as JSON."),
        response_format={"type": "json_object"},
    )

    answer = json.loads(completion.choices[0].message.content)
    assert isinstance(answer, dict) and answer


def test_json_mode_without_the_word_json_is_refused_as_openai_refuses_it(client: openai.OpenAI, server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=ask("List three colours."), response_format={"type": "json_object"}
        )

    assert refused.value.body["param"] == "messages"
    assert "must contain the word 'json'" in refused.value.body["message"]
    assert server.emulator.ledger() == []


def test_max_tokens_cuts_the_json_and_says_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=ask("Extract the order."), response_format=order_format(), max_tokens=12
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == tiktoken_text_tokens(choice.message.content, "o200k_base") <= 12
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=ask("Solve 8x + 7 = -23"), response_format=Solution, max_tokens=5
        )


NOT_STRICT: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}


@pytest.mark.parametrize(
    ("schema", "strict", "says"),
    [
        (["not", "an", "object"], False, "schema must be a JSON Schema object"),
        ({"type": "object", "properties": {"a": {"type": "float"}}}, False, 'type "float" is not a JSON Schema type'),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/gone"}}}, False, "can't be resolved"),
        (NOT_STRICT, True, "'additionalProperties' is required to be supplied and to be false"),
        ({**NOT_STRICT, "additionalProperties": False}, True, "Missing 'a'"),
        ({"type": "array", "items": {"type": "string"}}, True, "schema must be a JSON Schema of 'type: \"object\"'"),
    ],
    ids=["not-an-object", "unsupported-type", "dangling-ref", "strict-open-object", "strict-optional", "strict-root"],
)
def test_a_schema_openai_cannot_use_is_a_bad_request_naming_response_format(
    client: openai.OpenAI, server, schema: Any, strict: bool, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=ask("hi"), response_format=order_format(schema, strict=strict)
        )

    error = refused.value.body
    assert (error["type"], error["param"]) == ("invalid_request_error", "response_format")
    assert error["message"].startswith("Invalid schema for response_format 'order'")
    assert says in error["message"]
    assert server.emulator.ledger() == []


def test_an_unknown_format_type_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=ask("hi"), response_format={"type": "xml"})

    assert refused.value.body["param"] == "response_format.type"


def test_the_responses_endpoint_honours_text_format(client: openai.OpenAI) -> None:
    text_format = {"type": "json_schema", "name": "order", "schema": ORDER_SCHEMA, "strict": True}

    response = client.responses.create(model="gpt-4.1-mini", input="Extract the order.", text={"format": text_format})

    jsonschema.validate(json.loads(response.output_text), ORDER_SCHEMA)
    assert response.status == "completed"
    assert (response.text.format.type, response.text.format.name) == ("json_schema", "order")
    assert response.usage.output_tokens == tiktoken_text_tokens(response.output_text, "o200k_base")
    parsed = client.responses.parse(model="gpt-4.1-mini", input="Solve 8x + 7 = -23", text_format=Solution)
    assert isinstance(parsed.output_parsed, Solution)


def test_the_responses_endpoint_cut_by_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    text_format = {"type": "json_schema", "name": "order", "schema": ORDER_SCHEMA, "strict": True}

    response = client.responses.create(
        model="gpt-4.1-mini", input="Extract the order.", text={"format": text_format}, max_output_tokens=16
    )

    assert (response.status, response.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert response.usage.output_tokens <= 16


def test_the_responses_endpoint_refuses_a_bad_schema_naming_text_format(client: openai.OpenAI) -> None:
    text_format = {"type": "json_schema", "name": "order", "schema": NOT_STRICT, "strict": True}

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4.1-mini", input="hi", text={"format": text_format})

    assert refused.value.body["param"] == "text.format.schema"


def test_a_batch_answers_with_the_same_validated_json_and_files_a_bad_schema_as_an_error(
    client: openai.OpenAI,
) -> None:
    def line(custom_id: str, schema: Any) -> dict[str, Any]:
        body = {"model": "gpt-4o-mini", "messages": ask("Extract the order."), "response_format": order_format(schema)}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}

    batch = wait_for_batch(client, start_batch(client, [line("good", ORDER_SCHEMA), line("bad", NOT_STRICT)]).id)

    [good] = read_jsonl(client, batch.output_file_id)
    content = good["response"]["body"]["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), ORDER_SCHEMA)
    realtime = client.chat.completions.create(**line("again", ORDER_SCHEMA)["body"])
    assert realtime.choices[0].message.content == content
    [bad] = read_jsonl(client, batch.error_file_id)
    assert bad["response"]["status_code"] == 400
    assert bad["response"]["body"]["error"]["param"] == "response_format"

"""Validation as strict as the provider: nesting depth, each endpoint's parameters, each model's limits.

A line the API would refuse is refused here, with its line, field and reason, before any batch
waits for it; a line it accepts passes, on the fast path and the general path alike.
"""

from __future__ import annotations

import json

import pytest
from batchline.composition import model_table, price_book
from batchline.domain.fast_lines import fast_parse
from batchline.domain.json_depth import MAX_JSON_DEPTH, nesting_depth
from batchline.domain.request_line import InvalidLine, RequestValidator, ValidRequest
from batchline.engines.tokenization import token_counter
from batchline.settings import BATCH_ENDPOINTS, load_settings
from hostile_lines import ANSWERED, hostile_lines, write_hostile_file
from lines import chat
from typer.testing import CliRunner

from batchline_cli.cli import app

WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    settings = load_settings()
    return RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(settings),
        models=model_table(settings),
        assumed_output_tokens=256,
        max_line_bytes=8 << 20,
        token_counters=token_counter,
    )


def _outcome(validator: RequestValidator, raw: str) -> ValidRequest | InvalidLine:
    """Validated as the planner does: parsed, then (when valid) counted and held to the model's window."""
    outcome = validator.validate(7, raw.encode())
    if isinstance(outcome, ValidRequest):
        outcome.count_prompt_tokens()
        return validator.after_count(outcome) or outcome
    return outcome


def _nested_chat(depth: int) -> str:
    metadata = '{"k": ' * depth + '"v"' + "}" * depth
    return chat("deep")[:-2] + ', "metadata": ' + metadata + "}}"


def test_a_line_nested_a_thousand_levels_deep_is_one_invalid_json_error_not_a_crash(validator):
    outcome = validator.validate(7, _nested_chat(1000).encode())
    assert isinstance(outcome, InvalidLine)
    assert (outcome.line, outcome.code) == (7, "invalid_json")
    assert "1002 levels" in outcome.message and str(MAX_JSON_DEPTH) in outcome.message


def test_nesting_up_to_the_limit_passes_and_brackets_inside_strings_do_not_count(validator):
    text = "[[[{{{" * 100  # 600 brackets inside a string: no nesting at all
    assert nesting_depth(json.dumps({"a": text}).encode()) == 1
    outcome = validator.validate(1, chat("brackets", text=text).encode())
    assert isinstance(outcome, ValidRequest)
    within = json.dumps(
        {**json.loads(chat("x")), "extra": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    )
    assert nesting_depth(within.encode()) == MAX_JSON_DEPTH
    assert isinstance(validator.validate(1, within.encode()), ValidRequest)


@pytest.mark.parametrize("value", [-5, 0, "20", True, 20.5, 1e308, 10**12, 16_385])
def test_max_tokens_the_api_refuses_is_refused_naming_the_field_and_value(validator, value):
    raw = chat("cap", max_tokens=value)
    if value not in (10**12, 16_385):  # within the type's range: only the model's cap refuses them
        assert fast_parse(raw.encode(), 256) is None  # the fast path leaves the refusal to the general one
    outcome = _outcome(validator, raw)
    assert isinstance(outcome, InvalidLine) and outcome.code == "invalid_parameter"
    assert "body.max_tokens" in outcome.message and json.dumps(value) in outcome.message


def test_the_models_own_output_cap_is_accepted_and_budgets_exactly(validator):
    outcome = _outcome(validator, chat("cap", max_tokens=16_384))
    assert isinstance(outcome, ValidRequest) and outcome.max_output_tokens == 16_384
    assert _outcome(validator, chat("n", max_tokens=10, n=3)).max_output_tokens == 30  # billed for every choice


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"temperature": 7}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logit_bias": {"50256": 101}}, "logit_bias"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"metadata": {"k": 5}}, "metadata"),
    ],
)
def test_each_known_parameter_is_held_to_the_apis_type_and_range(validator, body, field):
    outcome = _outcome(validator, chat("p", **body))
    assert isinstance(outcome, InvalidLine) and outcome.code == "invalid_parameter"
    assert f"body.{field}" in outcome.message


def test_parameters_at_their_bounds_and_unknown_parameters_pass(validator):
    for body in ({"temperature": 2}, {"temperature": 0}, {"top_p": 1}, {"stop": "x"}, {"brand_new_option": {"a": 1}}):
        assert isinstance(_outcome(validator, chat("p", **body)), ValidRequest), body


def test_a_prompt_longer_than_the_models_context_window_is_refused_with_its_size(validator):
    outcome = _outcome(validator, chat("long", text="word " * 130_000))
    assert isinstance(outcome, InvalidLine) and outcome.code == "context_length_exceeded"
    assert "128,000" in outcome.message and "gpt-4o-mini" in outcome.message
    # The same prompt fits a model with a larger window.
    assert isinstance(_outcome(validator, chat("long", text="word " * 130_000, model="gpt-4.1-mini")), ValidRequest)


def test_a_model_is_refused_on_an_endpoint_that_does_not_serve_it(validator):
    embed_with_chat_model = json.dumps(
        {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "gpt-4o-mini", "input": "x"}}
    )
    for raw in (embed_with_chat_model, chat("c", model="text-embedding-3-small")):
        outcome = _outcome(validator, raw)
        assert isinstance(outcome, InvalidLine) and outcome.code == "model_not_supported_for_endpoint"


def test_validate_reports_every_hostile_line_with_its_number_and_exits_1(tmp_path):
    path = tmp_path / "hostile.jsonl"
    expected = write_hostile_file(path)
    result = CliRunner().invoke(app, ["validate", str(path)], env=WIDE)
    refused = [number for number, outcome in expected if outcome != ANSWERED]
    assert result.exit_code == 1, result.output
    assert f"{len(expected)} non-blank lines: {len(expected) - len(refused)} valid, {len(refused)} invalid" in " ".join(
        result.output.split()
    )


def test_estimate_prices_only_what_the_api_would_take(tmp_path):
    path = tmp_path / "hostile.jsonl"
    write_hostile_file(path)
    result = CliRunner().invoke(app, ["estimate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.output)
    refused = sum(outcome != ANSWERED for _, outcome in hostile_lines())
    assert (estimate["invalid_lines"], estimate["valid"]) == (refused, len(hostile_lines()) - refused)
    assert estimate["invalid_by_code"]["invalid_parameter"] == 8
    # No 1e308 or 10^12 output cap and no 1.3M-token prompt reaches the figures: 27 requests of 12 output
    # tokens each, and prompts of a few words.
    assert estimate["output_tokens"] == 27 * 12
    assert estimate["input_tokens"] < 1_000

"""`batchline estimate`: exact prompt tokens for every endpoint, the pipeline's shards, other models' prices.

These run with the network off: without --sample, an estimate never leaves the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from batchline.composition import planner_for, price_book
from batchline.domain.request_line import iter_physical_lines
from batchline.engines.tokenization import ParallelTokenCounter
from batchline.settings import load_settings
from fakes import MemoryPlanOutputs
from lines import BAD_LINES, chat, embedding
from test_tokens import reference_chat_tokens
from typer.testing import CliRunner

from batchline_cli.cli import app

O200K = tiktoken.get_encoding("o200k_base")
CL100K = tiktoken.get_encoding("cl100k_base")
WIDE = {"COLUMNS": "200"}  # rich wraps tables at the terminal's width; the runner has none


def _request(custom_id: str, url: str, body: dict[str, Any]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": f"/v1/{url}", "body": body})


MESSAGES = [
    {"role": "system", "content": "You label feedback. Reply 'sentiment/topic' and nothing else."},
    {"role": "user", "name": "alice", "content": "The kettle arrived dented 😞 — ünïcödé, tabs\tand\nnewlines."},
    {"role": "assistant", "content": "negative/product_quality"},
    {"role": "user", "content": "And the second one?"},
]
TEXT = "A red kettle, 1.7 l, with a limescale filter. Ships in 2–3 days 🚚"

# (request line, its prompt tokens under OpenAI's rules, counted straight from tiktoken)
CASES: dict[str, tuple[str, int]] = {
    "chat, o200k": (
        _request("chat-o200k", "chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 9}),
        reference_chat_tokens(O200K, MESSAGES),
    ),
    "chat, cl100k": (
        _request("chat-cl100k", "chat/completions", {"model": "gpt-3.5-turbo", "messages": MESSAGES}),
        reference_chat_tokens(CL100K, MESSAGES),
    ),
    "embeddings": (
        _request("embed", "embeddings", {"model": "text-embedding-3-small", "input": TEXT}),
        len(CL100K.encode(TEXT)),
    ),
    "responses, text": (
        _request(
            "resp-text",
            "responses",
            {"model": "gpt-4o-mini", "instructions": "Summarise in one line.", "input": TEXT},
        ),
        len(O200K.encode("Summarise in one line.")) + len(O200K.encode(TEXT)),
    ),
    "responses, messages": (
        _request("resp-messages", "responses", {"model": "gpt-4o", "input": MESSAGES, "max_output_tokens": 40}),
        reference_chat_tokens(O200K, MESSAGES),
    ),
    "completions": (
        _request("complete", "completions", {"model": "gpt-3.5-turbo-instruct", "prompt": TEXT, "max_tokens": 5}),
        len(CL100K.encode(TEXT)),
    ),
    "moderations": (
        _request("moderate", "moderations", {"model": "omni-moderation-latest", "input": TEXT}),
        len(O200K.encode(TEXT)),
    ),
}


def write(tmp_path: Path, lines: list[str], name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"context": {"batchline": values}}))
    return path


def estimate(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # exactly one JSON object on stdout, nothing else


@pytest.mark.parametrize("case", CASES)
def test_each_requests_prompt_tokens_are_exactly_what_tiktoken_counts_under_openais_rules(tmp_path, case):
    line, expected = CASES[case]

    estimated = estimate(str(write(tmp_path, [line])))

    assert estimated["input_tokens"] == expected
    assert [group["input_tokens"] for group in estimated["groups"]] == [expected]


def test_a_file_of_every_endpoint_totals_exactly_per_group_and_overall(tmp_path):
    estimated = estimate(str(write(tmp_path, [line for line, _ in CASES.values()])))

    groups = {(g["endpoint"], g["model"]): g["input_tokens"] for g in estimated["groups"]}
    assert groups == {
        ("/v1/chat/completions", "gpt-4o-mini"): CASES["chat, o200k"][1],
        ("/v1/chat/completions", "gpt-3.5-turbo"): CASES["chat, cl100k"][1],
        ("/v1/embeddings", "text-embedding-3-small"): CASES["embeddings"][1],
        ("/v1/responses", "gpt-4o-mini"): CASES["responses, text"][1],
        ("/v1/responses", "gpt-4o"): CASES["responses, messages"][1],
        ("/v1/completions", "gpt-3.5-turbo-instruct"): CASES["completions"][1],
        ("/v1/moderations", "omni-moderation-latest"): CASES["moderations"][1],
    }
    assert estimated["input_tokens"] == sum(expected for _, expected in CASES.values())
    assert estimated["valid"] == len(CASES) and estimated["invalid_lines"] == 0


def test_output_tokens_are_each_requests_cap_or_the_assumed_default(tmp_path):
    estimated = estimate(str(write(tmp_path, [line for line, _ in CASES.values()])))

    # chat o200k: max_tokens 9; chat cl100k: no cap, the setting's 256; responses: none (256) and 40;
    # completions: max_tokens 5; embeddings and moderations produce none.
    assert estimated["output_tokens"] == estimated["output_tokens_assumed"] == 9 + 256 + 256 + 40 + 5
    assert estimated["output_tokens_source"] == "max_tokens"


def test_shards_are_the_ones_the_pipelines_planner_cuts(tmp_path):
    one_chat = reference_chat_tokens(O200K, [{"role": "user", "content": "Classify: the parcel came late."}])
    # At most 3 requests a shard, and gpt-4o's enqueued-token limit holds 2 of its requests.
    values = {"shard_max_requests": 3, "batch_queue": {"tokens": {"gpt-4o": 2 * one_chat + 1}}}
    lines = [chat(f"mini-{i}") for i in range(10)] + [embedding(f"e-{i}") for i in range(4)]
    lines += [chat(f"big-{i}", model="gpt-4o") for i in range(5)]
    path = write(tmp_path, lines)

    estimated = estimate(str(path), "--cdk-json", str(settings_file(tmp_path, values)))

    pool = ParallelTokenCounter(1)
    try:
        planned = planner_for(load_settings(values), outputs=MemoryPlanOutputs(), token_counter=pool).run(
            iter_physical_lines([path.read_bytes()])
        )
    finally:
        pool.close()
    assert estimated["shards"] == estimated["batches"] == len(planned.shards) == 4 + 2 + 3
    per_group = {(g["endpoint"], g["model"]): g["shards"] for g in estimated["groups"]}
    assert per_group == {
        ("/v1/chat/completions", "gpt-4o-mini"): 4,
        ("/v1/embeddings", "text-embedding-3-small"): 2,
        ("/v1/chat/completions", "gpt-4o"): 3,
    }


def test_another_model_is_priced_on_the_same_requests_counted_with_its_own_encoding(tmp_path):
    line, _ = CASES["embeddings"]
    chat_line, chat_tokens = CASES["chat, o200k"]
    path = write(tmp_path, [line, chat_line])

    estimated = estimate(str(path), "--model", "gpt-4o", "-m", "gpt-3.5-turbo")

    prices = price_book(load_settings())
    by_model = {m["model"]: m for m in estimated["models"]}
    assert list(by_model) == ["gpt-4o", "gpt-3.5-turbo"]
    expected_input = {
        "gpt-4o": chat_tokens + len(O200K.encode(TEXT)),
        "gpt-3.5-turbo": reference_chat_tokens(CL100K, MESSAGES) + len(CL100K.encode(TEXT)),
    }
    for model, compared in by_model.items():
        price = prices.price_for(model)
        realtime = (expected_input[model] * price.input_per_million + 9 * price.output_per_million) / 1e6
        assert (compared["input_tokens"], compared["output_tokens"]) == (expected_input[model], 9)
        assert compared["encoding"] == price.encoding
        assert compared["cost_usd_realtime"] == pytest.approx(realtime)
        assert compared["cost_usd_batch"] == pytest.approx(realtime * 0.5)


def test_an_unknown_model_is_refused_with_exit_2_and_the_setting_that_prices_it(tmp_path):
    path = write(tmp_path, [chat("c1")])

    result = CliRunner().invoke(app, ["estimate", str(path), "--model", "gpt-9-ultra"])

    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "model 'gpt-9-ultra' has no price" in said and "genai-prices" in said
    example = '"pricing": {"gpt-9-ultra": {"input_per_million": 1.0, "output_per_million": 4.0}}'
    assert example in said

    # Doing what it says prices the model.
    cdk_json = settings_file(tmp_path, json.loads("{" + example + "}"))
    estimated = estimate(str(path), "--model", "gpt-9-ultra", "--cdk-json", str(cdk_json))

    (compared,) = estimated["models"]
    expected = (compared["input_tokens"] * 1.0 + compared["output_tokens"] * 4.0) / 1e6
    assert compared["cost_usd_realtime"] == pytest.approx(expected)
    assert compared["cost_usd_batch"] == pytest.approx(expected * 0.5)


def test_json_holds_the_totals_the_groups_the_comparisons_and_the_invalid_lines(tmp_path):
    path = write(tmp_path, [chat("c1"), BAD_LINES[0][0], chat("c1"), embedding("e1")])

    estimated = estimate(str(path), "--model", "gpt-4o")

    assert {
        "input_tokens",
        "output_tokens",
        "cost_usd_batch",
        "cost_usd_realtime",
        "shards",
        "groups",
        "models",
        "invalid_lines",
        "output_tokens_source",
    } <= estimated.keys()
    assert (estimated["input_lines"], estimated["valid"], estimated["invalid_lines"]) == (4, 2, 2)
    assert estimated["invalid_by_code"] == {"duplicate_custom_id": 1, "invalid_json": 1}
    assert estimated["cost_usd_batch"] == pytest.approx(sum(g["cost_usd_batch"] for g in estimated["groups"]))
    assert estimated["cost_usd_realtime"] == pytest.approx(2 * estimated["cost_usd_batch"])
    assert estimated["sample"] is None


def test_the_table_says_where_output_tokens_come_from(tmp_path):
    path = write(tmp_path, [chat("c1"), embedding("e1")])

    result = CliRunner().invoke(app, ["estimate", str(path), "-m", "gpt-4.1-nano"], env=WIDE)

    assert result.exit_code == 0, result.output
    assert "estimate of in.jsonl" in result.stdout
    assert "output tokens: assumed from max_tokens" in result.stdout
    assert "2 lines: 2 valid, 0 invalid" in result.stdout
    assert "gpt-4.1-nano" in result.stdout and "total" in result.stdout


def test_a_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["estimate", str(tmp_path / "nope.jsonl")])

    assert result.exit_code == 2
    assert "does not exist" in result.output

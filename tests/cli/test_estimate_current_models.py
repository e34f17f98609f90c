"""`batchline estimate` on today's models: priced from the maintained table (genai-prices), never refused.

No emulator and no network: an estimate without --sample never leaves the machine.
"""

from __future__ import annotations

import json

import pytest
from lines import chat, embedding
from typer.testing import CliRunner

from batchline_cli.cli import app

WIDE = {"COLUMNS": "200"}  # rich wraps at the terminal's width; the runner has none
# USD per million tokens (input, output) in genai-prices 0.2.3: realtime, and the Batch API's own rates.
CURRENT = {
    "gpt-5-mini": ((0.25, 2.0), (0.125, 1.0)),
    "o4-mini": ((1.1, 4.4), (0.55, 2.2)),
    "gpt-4.1-nano": ((0.1, 0.4), (0.05, 0.2)),
}


@pytest.fixture
def current_models_file(tmp_path):
    path = tmp_path / "current.jsonl"
    lines = [chat(f"{model}-{i}", model=model) for model in CURRENT for i in range(3)]
    path.write_text("\n".join([*lines, embedding("e-1")]) + "\n")
    return path


def test_estimate_prices_gpt_5_mini_o4_mini_and_gpt_4_1_nano_from_the_maintained_table(current_models_file):
    result = CliRunner().invoke(app, ["estimate", str(current_models_file)], env=WIDE)

    assert result.exit_code == 0, result.output
    assert "unknown_model" not in result.output and "0 invalid" in result.output
    for model, ((realtime_in, realtime_out), (batch_in, batch_out)) in CURRENT.items():
        assert (
            f"price of {model}: ${realtime_in:g} in, ${realtime_out:g} out per million tokens realtime; "
            f"${batch_in:g} in, ${batch_out:g} out batch (from genai-prices 0.2.3)"
        ) in result.output
    # No batch rate in the table for embeddings: the provider's rule, half the realtime price.
    assert "price of text-embedding-3-small: $0.02 in, $0 out per million tokens realtime; $0.01 in" in result.output


def test_estimate_json_costs_each_group_at_the_tables_rates(current_models_file):
    result = CliRunner().invoke(app, ["estimate", str(current_models_file), "--json"])

    assert result.exit_code == 0, result.output
    estimated = json.loads(result.stdout)
    groups = {group["model"]: group for group in estimated["groups"]}
    for model, ((realtime_in, realtime_out), (batch_in, batch_out)) in CURRENT.items():
        group = groups[model]
        tokens_in, tokens_out = group["input_tokens"], group["output_tokens"]
        assert group["requests"] == 3 and tokens_out == 3 * 20  # chat() caps each answer at 20 tokens
        assert group["cost_usd_realtime"] == pytest.approx((tokens_in * realtime_in + tokens_out * realtime_out) / 1e6)
        assert group["cost_usd_batch"] == pytest.approx((tokens_in * batch_in + tokens_out * batch_out) / 1e6)
        assert estimated["prices"][model]["source"] == "genai-prices 0.2.3"


def test_estimate_compares_a_current_model_given_with_model(current_models_file):
    result = CliRunner().invoke(app, ["estimate", str(current_models_file), "--model", "gpt-5", "--json"])

    assert result.exit_code == 0, result.output
    (compared,) = json.loads(result.stdout)["models"]
    expected = (compared["input_tokens"] * 1.25 + compared["output_tokens"] * 10.0) / 1e6
    assert compared["model"] == "gpt-5" and compared["cost_usd_realtime"] == pytest.approx(expected)
    assert compared["cost_usd_batch"] == pytest.approx(expected * 0.5)

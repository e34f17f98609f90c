"""`batchline.run` and `batchline.estimate` from Python, as a notebook calls them: a DataFrame in,
a DataFrame out, one row per input row, on the local stack (moto and the built-in emulator)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import batchline
import polars as pl
import pytest
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]


class Verdict(BaseModel):
    sentiment: str
    topic: str


@pytest.mark.timeout(600)
def test_a_polars_frame_comes_back_as_a_polars_frame_of_validated_answers_in_row_order(tmp_path):
    frame = pl.DataFrame({"ticket": ["t-3", "t-1", "t-2"], "text": ["slow app", "great support", "billing error"]})

    answers = batchline.run(
        frame,
        prompt="What is this about? {{ text }}",
        model="gpt-4o-mini",
        schema=Verdict,
        id_column="ticket",
        state_dir=tmp_path / "state",
        quiet=True,
    )

    assert isinstance(answers, pl.DataFrame)
    assert answers["ticket"].to_list() == ["t-3", "t-1", "t-2"], "one row per input row, in input order"
    assert answers["text"].to_list() == frame["text"].to_list()
    assert set(answers["status"]) == {"succeeded"}
    for parsed in answers["parsed"]:
        Verdict.model_validate(json.loads(parsed))
    assert (answers["input_tokens"] > 0).all() and (answers["cost_usd"] > 0).all()


def test_estimate_prices_the_same_table_job_without_sending_anything():
    figures = batchline.estimate(
        REPO_ROOT / "examples" / "feedback.csv", prompt="Classify: {{ text }}", model="gpt-4o-mini"
    )

    assert figures["input_lines"] == 20 and figures["valid"] == 20 and figures["invalid_lines"] == 0
    assert figures["shards"] >= 1


def test_import_batchline_gives_the_api_without_loading_the_local_stack():
    probe = "import sys, batchline; batchline.run; print('batchline_local' in sys.modules, 'moto' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == ["False", "False"]

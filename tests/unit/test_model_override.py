"""`batchline submit --model M`: the copy that is uploaded asks for M, line for line."""

from __future__ import annotations

import json

import pytest
from lines import chat, embedding

from batchline_cli.model_override import MixedEndpointsError, rewrite_model


def test_every_request_asks_for_the_model_and_every_line_keeps_its_number(tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [chat("a", model="gpt-4o"), "", "{broken", chat("b"), "   ", '["not", "an object"]']
    source.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")

    rewritten = rewrite_model(source, tmp_path / "out.jsonl", "gpt-4.1-nano")

    written = (tmp_path / "out.jsonl").read_text().split("\n")
    assert written[1:3] == ["", "{broken"] and written[4:6] == ["   ", '["not", "an object"]']
    assert [json.loads(written[i])["body"]["model"] for i in (0, 3)] == ["gpt-4.1-nano", "gpt-4.1-nano"]
    assert json.loads(written[3])["body"]["messages"] == json.loads(chat("b"))["body"]["messages"]
    assert (rewritten.requests, rewritten.copied) == (2, 2)
    assert rewritten.models_before == {"gpt-4o": 1, "gpt-4o-mini": 1}


def test_a_file_that_mixes_endpoints_is_refused_and_leaves_no_copy(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([chat("a"), embedding("e"), chat("b")]) + "\n")

    with pytest.raises(MixedEndpointsError, match=r"/v1/chat/completions \(2\), /v1/embeddings \(1\)"):
        rewrite_model(source, tmp_path / "out.jsonl", "gpt-4o-mini")
    assert not (tmp_path / "out.jsonl").exists()

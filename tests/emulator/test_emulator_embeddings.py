"""Embeddings through the SDK: each model's real vector length, `dimensions` as OpenAI takes or refuses it."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from .helpers import tiktoken_text_tokens


def float32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


@pytest.mark.parametrize(
    ("model", "length"),
    [("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072), ("text-embedding-ada-002", 1536)],
)
def test_each_model_returns_vectors_of_its_real_length(client: openai.OpenAI, model: str, length: int) -> None:
    result = client.embeddings.create(model=model, input=["a red kettle", "a blue kettle"], encoding_format="float")

    assert [len(d.embedding) for d in result.data] == [length, length]
    assert all(abs(norm(d.embedding) - 1) < 1e-5 for d in result.data)


def test_embeddings_are_deterministic_unit_vectors_in_float_and_base64(client: openai.OpenAI) -> None:
    inputs = ["first sentence", "a second, longer sentence"]

    default = client.embeddings.create(model="text-embedding-3-small", input=inputs)  # SDK asks for base64
    as_floats = client.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="float")
    raw = client.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="base64")

    assert [d.index for d in default.data] == [0, 1]
    # the numbers written in decimal read back as exactly the float32 numbers base64 carries
    vectors = [float32(d.embedding) for d in as_floats.data]
    assert [d.embedding for d in default.data] == vectors
    decoded = [list(struct.unpack("<1536f", base64.b64decode(d.embedding))) for d in raw.data]
    assert decoded == vectors
    assert vectors[0] != vectors[1]
    assert max(len(repr(x)) for x in as_floats.data[0].embedding) <= len("-0.000123456789")
    expected = sum(tiktoken_text_tokens(text, "cl100k_base") for text in inputs)
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (expected, expected)


def test_dimensions_shortens_the_full_vector_as_openai_documents(client: openai.OpenAI) -> None:
    model = "text-embedding-3-large"
    full = client.embeddings.create(model=model, input="hi", encoding_format="float")
    short = client.embeddings.create(model=model, input="hi", dimensions=256, encoding_format="float")

    vector = short.data[0].embedding
    assert len(vector) == 256 and abs(norm(vector) - 1) < 1e-5
    head = full.data[0].embedding[:256]
    # the first 256 numbers of the full vector, scaled back to unit length
    assert all(abs(x - y / norm(head)) < 1e-6 for x, y in zip(vector, head, strict=True))


@pytest.mark.parametrize(
    ("model", "dimensions", "says"),
    [
        ("text-embedding-3-small", 1537, "Expected a value <= 1536"),
        ("text-embedding-3-large", 4096, "Expected a value <= 3072"),
        ("text-embedding-3-small", 0, "Expected a value >= 1"),
        ("text-embedding-ada-002", 512, "does not support specifying dimensions"),
    ],
    ids=["over-3-small", "over-3-large", "zero", "ada-002"],
)
def test_dimensions_the_model_cannot_give_are_refused_and_not_billed(
    client: openai.OpenAI, server, model: str, dimensions: int, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=model, input="hi", dimensions=dimensions)

    error = refused.value.body
    assert (error["type"], error["param"]) == ("invalid_request_error", "dimensions")
    assert says in error["message"]
    assert server.emulator.ledger() == []

"""Prompt tokens are counted exactly as OpenAI bills them, checked against tiktoken itself."""

from __future__ import annotations

import tiktoken
from batchline.domain.tokens import ParallelTokenCounter, max_output_tokens, token_counter

O200K = tiktoken.get_encoding("o200k_base")
CL100K = tiktoken.get_encoding("cl100k_base")


def reference_chat_tokens(encoding: tiktoken.Encoding, messages: list[dict]) -> int:
    """OpenAI's published rule, written out independently of the project's code."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value))
            if key == "name":
                total += 1
    return total


def test_chat_messages_count_per_message_overhead_names_and_reply_priming():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "alice", "content": "How many tokens is this, exactly? 🤔"},
        {"role": "assistant", "content": "Quite a few."},
    ]
    body = {"model": "gpt-4o-mini", "messages": messages}
    assert token_counter("o200k_base").prompt_tokens("/v1/chat/completions", body) == reference_chat_tokens(
        O200K, messages
    )


def test_text_that_spells_a_special_token_is_counted_as_text():
    body = {"input": "before <|endoftext|> after"}
    assert token_counter("cl100k_base").prompt_tokens("/v1/embeddings", body) == len(
        CL100K.encode("before <|endoftext|> after", disallowed_special=())
    )


def test_content_parts_count_only_their_text():
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "x"}}],
        }
    ]
    counted = token_counter("o200k_base").prompt_tokens("/v1/chat/completions", {"messages": messages})
    assert counted == 3 + 3 + len(O200K.encode("user")) + len(O200K.encode("describe"))


def test_embedding_inputs_of_every_shape():
    counter = token_counter("cl100k_base")
    assert counter.prompt_tokens("/v1/embeddings", {"input": "red kettle"}) == len(CL100K.encode("red kettle"))
    assert counter.prompt_tokens("/v1/embeddings", {"input": ["red", "blue kettle"]}) == 1 + len(
        CL100K.encode("blue kettle")
    )
    assert counter.prompt_tokens("/v1/embeddings", {"input": [101, 102, 103]}) == 3
    assert counter.prompt_tokens("/v1/embeddings", {"input": [[1, 2], [3]]}) == 3


def test_responses_input_string_and_instructions():
    counter = token_counter("o200k_base")
    body = {"instructions": "Be brief.", "input": "Summarise the review."}
    assert counter.prompt_tokens("/v1/responses", body) == len(O200K.encode("Be brief.")) + len(
        O200K.encode("Summarise the review.")
    )


def test_parallel_counting_gives_the_same_counts_in_the_same_order():
    counter = token_counter("o200k_base")
    jobs = [(counter, [f"text number {i} " * (i % 7 + 1)]) for i in range(500)]
    pool = ParallelTokenCounter(2)
    try:
        assert pool.submit(jobs)() == [len(O200K.encode(texts[0])) for _, texts in jobs]
    finally:
        pool.close()


def test_output_cap_comes_from_the_request_else_the_assumption():
    assert max_output_tokens("/v1/chat/completions", {"max_completion_tokens": 9, "max_tokens": 50}, 256) == 9
    assert max_output_tokens("/v1/chat/completions", {}, 256) == 256
    assert max_output_tokens("/v1/responses", {"max_output_tokens": 12}, 256) == 12
    assert max_output_tokens("/v1/completions", {}, 256) == 16
    assert max_output_tokens("/v1/embeddings", {"max_tokens": 99}, 256) == 0


def test_counting_many_texts_at_once_is_exact_even_when_a_text_spells_the_separator():
    counter = token_counter("cl100k_base")
    texts = ["plain words", "", "  spaces  ", "ends with newline\n", "\nstarts with one", "emoji 🤔🤔"]
    assert counter.count_many(texts) == [len(CL100K.encode_ordinary(t)) for t in texts]
    tricky = ["before <|endoftext|> after", "next"]
    assert counter.count_many(tricky) == [len(CL100K.encode_ordinary(t)) for t in tricky]

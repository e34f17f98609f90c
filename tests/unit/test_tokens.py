"""Prompt tokens are counted exactly as OpenAI bills them, checked against tiktoken itself."""

from __future__ import annotations

import random

import pytest
import tiktoken
from batchline.domain.tokens import max_output_tokens
from batchline.engines.tokenization import (
    _NON_ASCII_WHITESPACE,
    ParallelTokenCounter,
    TokenCounter,
    _Helper,
    _words,
    token_counter,
)

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


# Texts that stress where a piece of the split pattern may end: contractions, digits, marks,
# scripts without spaces, emoji sequences, text spelling the separator, and every white space
# next to a space or not.
TRICKY_TEXTS = [
    "plain words here",
    " leading space",
    "trailing space ",
    "double  space",
    "I'M sure they'll've said 'S 'LL",
    "12345 678 9,000.50 ½ ² ٣ 𝟘",
    "café naïve ǅemal İstanbul e\u0301 a\u0308",
    "中文 日本語 한국어 العربية हिन्दी",
    "👍🏽 👨\u200d👩\u200d👧 🤔🤔",
    "before <|endoftext|> after",
    "Hi,\nI've been waiting.\n\nThanks, J.",
    "line one \nline two",
    "tab\tthen word\t and tab-space",
    "crlf\r\nhere \r\n",
    "nbsp\xa0word\xa0 x\u3000y\u3000 z\u2003w",
    "path/to /file ./x //y",
    "",
    " ",
    "x",
]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_from_the_word_caches_equal_tiktokens_own(encoding):
    reference = tiktoken.get_encoding(encoding)
    counter = TokenCounter(encoding)  # a fresh one: empty caches
    assert counter.by_words
    for _ in range(2):  # the second time every word comes from the caches
        assert [counter.text(t) for t in TRICKY_TEXTS] == [len(reference.encode_ordinary(t)) for t in TRICKY_TEXTS]


def test_only_a_space_after_white_space_sends_a_text_to_whole_text_encoding():
    assert _words("a b\nc\td") == ["a", "b\nc\td"]
    assert _words(" a ") == ["", "a", ""]
    for text in ["a  b", "a\n b", "a\t b", "a\r b", "a\x0b b", "a\x0c b", "é\xa0 b", "é\u2028 b", "é\u3000 b"]:
        assert _words(text) is None, repr(text)


def test_the_white_space_the_word_rule_looks_for_is_all_of_unicode_white_space():
    # Python's isspace is Unicode White_Space (what the split patterns' \s means) plus four
    # ASCII separators that are not white space to the tokenizer.
    python_space = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    ours = {character for character, _ in _NON_ASCII_WHITESPACE} | set(" \t\n\x0b\x0c\r")
    assert python_space - ours == {"\x1c", "\x1d", "\x1e", "\x1f"} and ours <= python_space


def test_a_block_counted_by_the_caller_or_by_the_threads_gives_the_same_counts():
    counter = TokenCounter("o200k_base")
    jobs = [(counter, [t, f"request {i}: {t}"]) for i, t in enumerate(TRICKY_TEXTS * 20)]
    expected = [sum(len(O200K.encode_ordinary(t)) for t in texts) for _, texts in jobs]
    pool = ParallelTokenCounter(2, blocks_ahead=0)  # never hands a block over: the caller counts
    try:
        assert pool.submit(jobs)() == expected
    finally:
        pool.close()
    pool = ParallelTokenCounter(2, blocks_ahead=1_000)  # always hands it over
    try:
        assert pool.submit(jobs)() == expected
    finally:
        pool.close()


def test_an_encoding_whose_split_pattern_was_not_checked_is_counted_whole(monkeypatch):
    counter = TokenCounter("cl100k_base")
    monkeypatch.setattr(counter, "by_words", False)
    assert counter.text("some words here") == len(CL100K.encode_ordinary("some words here"))
    assert counter._tails == {}


VOCABULARY = [w for text in TRICKY_TEXTS for w in text.split(" ") if w and not w[-1].isspace()] + ["Hi,\nThe", "late."]


def helper_jobs(counter: TokenCounter, seed: int) -> list[tuple[TokenCounter, list[str]]]:
    """1,100 requests of new texts (never seen whole) made of the same vocabulary, and a few odd ones."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(VOCABULARY, k=12)) for _ in range(1_100)]
    texts[::100] = TRICKY_TEXTS[: len(texts[::100])]  # some break the word rule: counted by the parent
    return [(counter, [text]) for text in texts]


def expected_counts(jobs) -> list[int]:
    return [sum(len(O200K.encode_ordinary(t)) for t in texts) for _, texts in jobs]


def test_large_blocks_counted_by_the_helper_process_are_exact_with_cold_and_warm_caches(monkeypatch):
    answered = []
    helper_count = _Helper.count

    def spy(self, counter, texts):
        counts = helper_count(self, counter, texts)
        answered.append(sum(count is not None for count in counts))
        return counts

    monkeypatch.setattr(_Helper, "count", spy)
    counter = TokenCounter("o200k_base")
    pool = ParallelTokenCounter(2, blocks_ahead=0)  # the helper, or the caller: never whole-text threads
    try:
        for seed in (1, 2, 3):  # cold: the helper knows no word; then it has learned them from us
            jobs = helper_jobs(counter, seed)
            assert pool.submit(jobs)() == expected_counts(jobs)
    finally:
        pool.close()
    assert pool._helper is None
    assert answered[0] == 0 and answered[2] >= 1_000


def test_if_the_helper_process_dies_the_counts_are_still_exact():
    counter = TokenCounter("o200k_base")
    pool = ParallelTokenCounter(1)
    try:
        jobs = helper_jobs(counter, 0)
        assert pool.submit(jobs)() == expected_counts(jobs)
        pool._helper._process.kill()
        pool._helper._process.wait()
        for seed in (2, 3):
            jobs = helper_jobs(counter, seed)
            assert pool.submit(jobs)() == expected_counts(jobs)
        assert pool._helper is None  # given up: the other routes carry on
    finally:
        pool.close()


def test_small_blocks_never_start_the_helper_process():
    counter = TokenCounter("o200k_base")
    pool = ParallelTokenCounter(2)
    try:
        jobs = helper_jobs(counter, 0)[:500]
        assert pool.submit(jobs)() == expected_counts(jobs)
        assert pool._helper is None
    finally:
        pool.close()

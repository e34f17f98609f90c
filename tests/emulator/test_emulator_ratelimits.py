"""Rate limits on the realtime endpoints: per model, per epoch-aligned window, OpenAI's 429 and headers."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from typing import Any

import openai
import pytest
from batchline.settings import load_settings

from batchline_local.emulator import OpenAIEmulator
from batchline_local.emulator.ratelimits import format_duration

from .helpers import ManualClock, sdk_client, tiktoken_text_tokens

WINDOW_START = 1_800_000_000.0  # a multiple of every window length used here
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


def _limited(start_server, *, clock=None, **emulator: Any):
    settings = load_settings({"emulator": emulator})
    options = {} if clock is None else {"clock": clock}
    server = start_server(OpenAIEmulator(settings, **options))
    return server, sdk_client(server)


def _chat(client: openai.OpenAI, text: str, *, model: str = "gpt-4o-mini", max_tokens: int | None = 50):
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **extra
    )


def _refusal(call) -> tuple[dict[str, Any], Any]:
    with pytest.raises(openai.RateLimitError) as refused:
        call()
    return refused.value.response.json()["error"], refused.value.response.headers


def test_requests_past_the_token_budget_get_429_until_the_window_rolls(start_server) -> None:
    clock = ManualClock(WINDOW_START + 10)  # 50 s left in the minute-long window
    server, client = _limited(start_server, clock=clock, tokens_per_minute=200)

    answers = [_chat(client, f"question {i}") for i in range(3)]
    costs = [answer.parse().usage.prompt_tokens + 50 for answer in answers]
    assert sum(costs) <= 200 < sum(costs) + costs[0]

    error, headers = _refusal(lambda: _chat(client, "question 0"))

    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "tokens"
    assert error["param"] is None
    assert error["message"] == (
        "Rate limit reached for gpt-4o-mini in organization org-emulator on tokens per min (TPM): "
        f"Limit 200, Used {sum(costs)}, Requested {costs[0]}. Please try again in 50s."
    )
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("50", "50000")
    assert headers["x-ratelimit-remaining-tokens"] == str(200 - sum(costs))
    assert headers["x-ratelimit-reset-tokens"] == "50s"
    assert len(server.emulator.ledger()) == 3, "a refused request is not billed"

    clock.advance(50)  # the next window
    again = _chat(client, "question 0")

    assert again.headers["x-ratelimit-remaining-tokens"] == str(200 - costs[0])
    assert again.headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert len(server.emulator.ledger()) == 4


def test_requests_past_the_request_budget_get_429_of_type_requests(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    _, client = _limited(start_server, clock=clock, requests_per_minute=2, rate_window_seconds=1)

    first, second = _chat(client, "a"), _chat(client, "b")
    clock.advance(0.88)
    error, headers = _refusal(lambda: _chat(client, "c"))

    assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == [
        "1",
        "0",
    ]
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in 120ms." in error["message"]
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("120", "1")
    assert headers["x-ratelimit-reset-requests"] == "120ms"


def test_every_realtime_answer_carries_the_headers_and_remaining_tokens_fall_by_each_cost(start_server) -> None:
    _, client = _limited(start_server, clock=ManualClock(WINDOW_START), tokens_per_minute=100_000)
    calls = [  # (call, the output cap OpenAI charges on top of the prompt)
        (lambda: _chat(client, "capped", max_tokens=7), 7),
        (lambda: _chat(client, "uncapped", max_tokens=None), 256),  # settings.assumed_output_tokens
        (lambda: client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi"), 0),
        (lambda: client.responses.with_raw_response.create(model="gpt-4o", input="hi", max_output_tokens=20), 20),
        (lambda: client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="hi"), 16),
        (lambda: client.moderations.with_raw_response.create(input="hi"), 0),
    ]
    charged: dict[str, int] = {}
    remaining_requests = []

    for call, output_cap in calls:
        raw = call()
        answer = raw.parse()
        usage = getattr(answer, "usage", None)  # moderations report no usage: "hi" is one token
        prompt = tiktoken_text_tokens("hi", "o200k_base") if usage is None else getattr(usage, "prompt_tokens", None)
        prompt = prompt if prompt is not None else usage.input_tokens
        charged[answer.model] = charged.get(answer.model, 0) + prompt + output_cap

        assert all(name in raw.headers for name in RATE_LIMIT_HEADERS)
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(100_000 - charged[answer.model])
        assert raw.headers["x-ratelimit-reset-tokens"] == raw.headers["x-ratelimit-reset-requests"] == "1m0s"
        remaining_requests.append(raw.headers["x-ratelimit-remaining-requests"])

    # Budgets are per model: the chat model's second request sees one fewer, the others start afresh.
    assert remaining_requests == ["9999", "9998", "9999", "9999", "9999", "9999"]


def test_each_model_has_its_own_budget(start_server) -> None:
    _, client = _limited(start_server, clock=ManualClock(WINDOW_START), requests_per_minute=1)

    _chat(client, "hi", model="gpt-4o-mini")
    _refusal(lambda: _chat(client, "hi", model="gpt-4o-mini"))

    assert _chat(client, "hi", model="gpt-4o").headers["x-ratelimit-remaining-requests"] == "0"


def test_a_request_larger_than_the_whole_budget_is_refused_as_too_large(start_server) -> None:
    server, client = _limited(start_server, clock=ManualClock(WINDOW_START), tokens_per_minute=100)

    error, _ = _refusal(lambda: _chat(client, "hello", max_tokens=500))

    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "tokens"
    assert error["message"].startswith("Request too large for gpt-4o-mini in organization org-emulator")
    assert "Limit 100, Requested 5" in error["message"]
    assert server.emulator.stats()["models"]["gpt-4o-mini"]["tokens_charged"] == 0


def test_an_invalid_request_is_refused_before_the_budget_and_charges_nothing(start_server) -> None:
    server, client = _limited(start_server, clock=ManualClock(WINDOW_START), requests_per_minute=1)

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])

    assert _chat(client, "hi").headers["x-ratelimit-remaining-requests"] == "0"


def test_windows_are_aligned_to_the_epoch_and_short_windows_roll_in_real_time(start_server) -> None:
    server, client = _limited(start_server, tokens_per_minute=150, rate_window_seconds=0.5)

    def exhaust() -> dict[str, Any]:
        while True:
            try:
                _chat(client, "a question that costs tokens")
            except openai.RateLimitError as refused:
                return refused.response.headers

    headers = exhaust()
    retry_ms = int(headers["retry-after-ms"])
    assert 0 < retry_ms <= 500
    assert headers["retry-after"] == str(math.ceil(retry_ms / 1000))
    time.sleep(retry_ms / 1000 + 0.01)

    assert _chat(client, "a question that costs tokens").parse().choices
    windows = server.emulator.stats()["models"]["gpt-4o-mini"]["windows"]
    assert len(windows) >= 2
    assert all(w["window_start"] % 0.5 == 0 for w in windows)
    assert any(w["refused"] for w in windows)
    assert all(w["tokens"] <= 150 for w in windows)


def test_stats_count_accepted_and_refused_requests_and_the_tokens_charged_per_window(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    server, client = _limited(start_server, clock=clock, tokens_per_minute=150, rate_window_seconds=10)
    accepted: list[tuple[float, int]] = []
    refused: list[float] = []
    for second in range(20):
        try:
            answer = _chat(client, f"question {second}", max_tokens=20).parse()
            accepted.append((clock.now, answer.usage.prompt_tokens + 20))
        except openai.RateLimitError:
            refused.append(clock.now)
        clock.advance(1)

    stats = server.emulator.stats()

    assert (stats["window_seconds"], stats["requests_per_window"], stats["tokens_per_window"]) == (10, 10_000, 150)
    model = stats["models"]["gpt-4o-mini"]
    assert model["requests_ok"] == len(accepted)
    assert model["requests_429"] == len(refused) > 0
    assert model["tokens_charged"] == sum(cost for _, cost in accepted)

    def within(start: float, at: float) -> bool:
        return start <= at < start + 10

    assert model["windows"] == [
        {
            "window_start": start,
            "requests": sum(1 for at, _ in accepted if within(start, at)),
            "tokens": sum(cost for at, cost in accepted if within(start, at)),
            "refused": sum(1 for at in refused if within(start, at)),
        }
        for start in (WINDOW_START, WINDOW_START + 10)
    ]
    assert all(window["tokens"] <= 150 for window in model["windows"])
    with urllib.request.urlopen(f"{server.root_url}/_emulator/stats", timeout=5) as response:
        assert json.loads(response.read()) == stats


def test_latency_is_slept_outside_the_lock_so_concurrent_requests_overlap(start_server) -> None:
    _, client = _limited(start_server, realtime_latency_seconds=0.3)
    durations: list[float] = []

    def call() -> None:
        started = time.monotonic()
        _chat(client, "hi")
        durations.append(time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    assert len(durations) == 4 and min(durations) >= 0.3
    assert elapsed < 0.3 * 3, "four requests would take 1.2 s one after the other"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.12, "120ms"), (0.0004, "1ms"), (1, "1s"), (1.5, "1.5s"), (59.9991, "1m0s"), (360, "6m0s"), (3725, "1h2m5s")],
)
def test_durations_use_openais_format(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected

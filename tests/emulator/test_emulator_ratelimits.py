"""Rate limits on the realtime endpoints: per model, OpenAI's 429s and x-ratelimit-* headers.

By default a token bucket, as OpenAI limits: refilled continuously at limit/60 per second and
holding one second of that, so a burst is refused past a quantum although under the per-minute
figure. The fixed windows of before remain as ``rate_limit_algorithm="fixed_window"``.
"""

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
from batchline_local.emulator.errors import RateLimited
from batchline_local.emulator.ratelimits import format_duration, rate_limiter

from .helpers import ManualClock, sdk_client, tiktoken_chat_prompt_tokens, tiktoken_text_tokens

WINDOW_START = 1_800_000_000.0  # a multiple of every window length used here
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)
FIXED = {"rate_limit_algorithm": "fixed_window"}


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


def _costing(client: openai.OpenAI, cost: int, text: str = "hi"):
    """A chat call whose charge (prompt tokens + max_tokens) is exactly ``cost`` tokens."""
    prompt = tiktoken_chat_prompt_tokens([{"role": "user", "content": text}], "o200k_base")
    assert cost > prompt
    return _chat(client, text, max_tokens=cost - prompt)


def _refusal(call) -> tuple[dict[str, Any], Any]:
    with pytest.raises(openai.RateLimitError) as refused:
        call()
    return refused.value.response.json()["error"], refused.value.response.headers


def _admitted(call) -> bool:
    try:
        call()
    except openai.RateLimitError:
        return False
    return True


# ----- token bucket (the default) ---------------------------------------------------------------


def test_a_burst_of_a_minutes_budget_is_refused_past_one_seconds_worth(start_server) -> None:
    # 12,000 TPM: a bucket of 200 tokens refilled at 200/s. A minute's budget is 120 requests of 100.
    clock = ManualClock(WINDOW_START)
    server, client = _limited(start_server, clock=clock, tokens_per_minute=12_000)

    outcomes = [_admitted(lambda: _costing(client, 100)) for _ in range(120)]

    assert outcomes.count(True) == 2 and outcomes[:2] == [True, True], "one second's worth, then 429s"
    error, headers = _refusal(lambda: _costing(client, 100))
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "tokens"
    assert error["message"] == (
        "Rate limit reached for gpt-4o-mini in organization org-emulator on tokens per min (TPM): "
        "Limit 12000, Used 200, Requested 100. Please try again in 500ms."
    )
    # Refused although the per-minute figure is far from spent, as OpenAI's quantized limits do.
    assert headers["x-ratelimit-limit-tokens"] == "12000"
    assert headers["x-ratelimit-remaining-tokens"] == "11800"
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("500", "1")
    assert len(server.emulator.ledger()) == 2, "a refused request is not billed"

    clock.advance(1)  # one more second's worth has refilled, and no more
    assert [_admitted(lambda: _costing(client, 100)) for _ in range(3)] == [True, True, False]


def test_sending_at_exactly_the_refill_rate_is_all_admitted_and_uses_the_whole_limit(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    server, client = _limited(start_server, clock=clock, tokens_per_minute=12_000)  # 200 tokens/s
    _costing(client, 100)
    _costing(client, 100)  # the bucket is empty now

    refused = 0
    for _ in range(40):
        clock.advance(0.5)  # 100 tokens refill in 0.5 s: exactly what the next request costs
        refused += not _admitted(lambda: _costing(client, 100))

    assert refused == 0
    model = server.emulator.stats()["models"]["gpt-4o-mini"]
    assert (model["first_admitted_at"], model["last_admitted_at"]) == (WINDOW_START, WINDOW_START + 20)
    sending = model["last_admitted_at"] - model["first_admitted_at"]
    share = model["tokens_charged"] / (12_000 / 60 * sending)
    assert model["tokens_charged"] == 42 * 100
    assert share == pytest.approx(1.05)  # the full refill rate, plus the bucket it started with


def test_the_retry_after_of_a_refusal_is_exactly_when_the_bucket_holds_enough(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    _, client = _limited(start_server, clock=clock, tokens_per_minute=6_000)  # a bucket of 100, 100/s
    _costing(client, 60)

    error, headers = _refusal(lambda: _costing(client, 60))  # 40 left: 20 short, 0.2 s of refill

    assert (headers["retry-after-ms"], headers["retry-after"]) == ("200", "1")
    assert error["message"].endswith("Limit 6000, Used 60, Requested 60. Please try again in 200ms.")
    clock.advance(0.199)
    _, headers = _refusal(lambda: _costing(client, 60))
    assert headers["retry-after-ms"] == "1"
    clock.advance(0.001)
    assert _admitted(lambda: _costing(client, 60))


def test_the_request_bucket_refuses_with_type_requests_and_its_own_wait(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    _, client = _limited(start_server, clock=clock, requests_per_minute=120)  # a bucket of 2, 2/s

    first, second = _chat(client, "a"), _chat(client, "b")
    clock.advance(0.38)  # 0.76 of a request refilled: 0.24 short
    error, headers = _refusal(lambda: _chat(client, "c"))

    assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == [
        "119",
        "118",
    ]
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"
    assert "on requests per min (RPM): Limit 120, Used 2, Requested 1. Please try again in 120ms." in error["message"]
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("120", "1")
    clock.advance(0.12)
    assert _admitted(lambda: _chat(client, "c"))


def test_after_one_small_request_remaining_is_one_less_and_reset_reads_a_few_ms(start_server) -> None:
    # The defaults: 10,000 RPM and 30,000,000 TPM.
    clock = ManualClock(WINDOW_START)
    _, client = _limited(start_server, clock=clock)

    headers = _costing(client, 60).headers

    assert headers["x-ratelimit-limit-requests"] == "10000"
    assert headers["x-ratelimit-limit-tokens"] == "30000000"
    assert headers["x-ratelimit-remaining-requests"] == "9999"
    assert headers["x-ratelimit-remaining-tokens"] == str(30_000_000 - 60)
    assert headers["x-ratelimit-reset-requests"] == "6ms"  # 1 request at 10,000/60 per second
    assert headers["x-ratelimit-reset-tokens"] == "1ms"  # 60 tokens at 500,000 per second: 0.12 ms, rounded up
    clock.advance(1)
    headers = _costing(client, 60).headers
    assert (headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-reset-requests"]) == ("9999", "6ms")


def test_after_heavy_use_reset_is_the_time_the_consumed_amount_takes_to_refill(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    _, client = _limited(start_server, clock=clock, tokens_per_minute=60_000)  # 1,000 tokens/s
    assert [_admitted(lambda: _costing(client, 100)) for _ in range(11)] == [True] * 10 + [False]

    clock.advance(0.25)
    headers = _costing(client, 100).headers  # 250 refilled, 100 taken: 850 consumed, not yet refilled

    assert headers["x-ratelimit-remaining-tokens"] == str(60_000 - 850)
    assert headers["x-ratelimit-reset-tokens"] == "850ms"
    # 10 requests admitted, all refilled within 0.25 s at 166.7 a second: only the last one counts.
    assert (headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-reset-requests"]) == ("9999", "6ms")


def test_a_request_bigger_than_the_bucket_runs_from_a_full_bucket_and_the_next_ones_wait(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    server, client = _limited(start_server, clock=clock, tokens_per_minute=6_000)  # a bucket of 100, 100/s

    big = _costing(client, 250)  # over the bucket, under the per-minute limit: admitted, 150 in debt
    error, headers = _refusal(lambda: _costing(client, 60))

    assert big.headers["x-ratelimit-remaining-tokens"] == str(6_000 - 250)
    assert big.headers["x-ratelimit-reset-tokens"] == "2.5s"
    assert error["type"] == "tokens" and headers["retry-after-ms"] == "2100"  # debt paid off, then 60 more
    clock.advance(2.1)
    assert _admitted(lambda: _costing(client, 60))
    _, headers = _refusal(lambda: _costing(client, 250))  # a big one waits for a full bucket again
    assert headers["retry-after-ms"] == "1000"
    clock.advance(1)
    assert _admitted(lambda: _costing(client, 250))
    assert server.emulator.stats()["models"]["gpt-4o-mini"]["tokens_charged"] == 250 + 60 + 250


def test_concurrent_requests_never_get_more_than_the_bucket_and_its_refill() -> None:
    # 60,000 TPM: a bucket of 1,000 tokens refilled at 1,000/s; requests of 10 tokens from 8 threads.
    limiter = rate_limiter(load_settings({"emulator": {"tokens_per_minute": 60_000}}).emulator, time.time)
    capacity, rate, cost = 1_000, 1_000, 10
    started = time.time()
    deadline = time.monotonic() + 0.6
    admitted: list[tuple[float, int]] = []
    refused = [0]
    tally = threading.Lock()

    def hammer() -> None:
        while time.monotonic() < deadline:
            try:
                limiter.admit("gpt-4o-mini", cost)
            except RateLimited:
                with tally:
                    refused[0] += 1
                continue
            with tally:
                admitted.append((time.time(), cost))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert refused[0] > 0, "the limit must have bound"
    total = 0
    for at, tokens in sorted(admitted):
        total += tokens
        # The clock is read to the microsecond: at most a microsecond of refill more.
        assert total <= capacity + rate * (at - started + 1e-6), (total, at - started)
    stats = limiter.stats()["models"]["gpt-4o-mini"]
    assert stats["tokens_charged"] == total and stats["requests_ok"] == len(admitted)
    assert stats["requests_429"] == refused[0]
    assert total >= capacity + rate * (stats["last_admitted_at"] - started) * 0.5, "and most of it was granted"


# ----- both algorithms ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window"])
def test_every_realtime_answer_carries_the_headers_and_remaining_tokens_fall_by_each_cost(
    start_server, algorithm: str
) -> None:
    _, client = _limited(
        start_server, clock=ManualClock(WINDOW_START), tokens_per_minute=100_000, rate_limit_algorithm=algorithm
    )
    calls = [  # (call, the output cap OpenAI charges on top of the prompt)
        (lambda: _chat(client, "capped", max_tokens=7), 7),
        (lambda: _chat(client, "uncapped", max_tokens=None), 256),  # settings.assumed_output_tokens
        (lambda: client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi"), 0),
        (lambda: client.responses.with_raw_response.create(model="gpt-4o", input="hi", max_output_tokens=20), 20),
        (lambda: client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="hi"), 16),
        (lambda: client.moderations.with_raw_response.create(input="hi"), 0),
    ]
    charged: dict[str, int] = {}
    requests: dict[str, int] = {}
    remaining_requests = []

    for call, output_cap in calls:
        raw = call()
        answer = raw.parse()
        usage = getattr(answer, "usage", None)  # moderations report no usage: "hi" is one token
        prompt = tiktoken_text_tokens("hi", "o200k_base") if usage is None else getattr(usage, "prompt_tokens", None)
        prompt = prompt if prompt is not None else usage.input_tokens
        charged[answer.model] = charged.get(answer.model, 0) + prompt + output_cap
        requests[answer.model] = requests.get(answer.model, 0) + 1

        assert all(name in raw.headers for name in RATE_LIMIT_HEADERS)
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(100_000 - charged[answer.model])
        if algorithm == "fixed_window":
            assert raw.headers["x-ratelimit-reset-tokens"] == raw.headers["x-ratelimit-reset-requests"] == "1m0s"
        else:  # the time the model's consumption takes to refill at the per-minute limit / 60 per second
            assert raw.headers["x-ratelimit-reset-tokens"] == format_duration(charged[answer.model] / (100_000 / 60))
            assert raw.headers["x-ratelimit-reset-requests"] == format_duration(requests[answer.model] / (10_000 / 60))
        remaining_requests.append(raw.headers["x-ratelimit-remaining-requests"])

    # Limits are per model: the chat model's second request sees one fewer, the others start afresh.
    assert remaining_requests == ["9999", "9998", "9999", "9999", "9999", "9999"]


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window"])
def test_each_model_has_its_own_limits(start_server, algorithm: str) -> None:
    _, client = _limited(
        start_server, clock=ManualClock(WINDOW_START), requests_per_minute=1, rate_limit_algorithm=algorithm
    )

    _chat(client, "hi", model="gpt-4o-mini")
    _refusal(lambda: _chat(client, "hi", model="gpt-4o-mini"))

    assert _chat(client, "hi", model="gpt-4o").headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window"])
def test_a_request_larger_than_the_per_minute_limit_is_refused_as_too_large(start_server, algorithm: str) -> None:
    server, client = _limited(
        start_server, clock=ManualClock(WINDOW_START), tokens_per_minute=100, rate_limit_algorithm=algorithm
    )

    error, headers = _refusal(lambda: _chat(client, "hello", max_tokens=500))

    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "tokens"
    assert error["message"].startswith("Request too large for gpt-4o-mini in organization org-emulator")
    assert "Limit 100, Requested 5" in error["message"]
    assert headers["x-ratelimit-remaining-tokens"] == "100"
    assert server.emulator.stats()["models"]["gpt-4o-mini"]["tokens_charged"] == 0


def test_an_invalid_request_is_refused_before_the_limits_and_charges_nothing(start_server) -> None:
    server, client = _limited(start_server, clock=ManualClock(WINDOW_START), requests_per_minute=1)

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])

    assert _chat(client, "hi").headers["x-ratelimit-remaining-requests"] == "0"


def test_a_refused_client_that_waits_the_retry_after_in_real_time_is_admitted(start_server) -> None:
    _, client = _limited(start_server, tokens_per_minute=6_000)  # a bucket of 100, 100/s; the real clock

    def exhaust() -> Any:
        while True:
            try:
                _costing(client, 60)
            except openai.RateLimitError as refused:
                return refused.response.headers

    headers = exhaust()
    retry_ms = int(headers["retry-after-ms"])
    assert 0 < retry_ms <= 600
    assert headers["retry-after"] == str(math.ceil(retry_ms / 1000))
    time.sleep(retry_ms / 1000)

    assert _costing(client, 60).parse().choices


def test_token_bucket_stats_give_the_limits_and_per_second_usage(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    server, client = _limited(start_server, clock=clock, tokens_per_minute=6_000, burst_seconds=0.5)
    outcomes = []
    for _ in range(8):  # a bucket of 50 tokens, refilled at 100/s: one request of 50 every 0.5 s
        outcomes.append(_admitted(lambda: _costing(client, 50)))
        clock.advance(0.25)

    stats = server.emulator.stats()

    assert outcomes == [True, False] * 4
    assert {key: stats[key] for key in ("algorithm", "burst_seconds", "requests_per_minute", "tokens_per_minute")} == {
        "algorithm": "token_bucket",
        "burst_seconds": 0.5,
        "requests_per_minute": 10_000,
        "tokens_per_minute": 6_000,
    }
    assert (stats["window_seconds"], stats["tokens_per_window"]) == (1, 100)
    model = stats["models"]["gpt-4o-mini"]
    assert (model["requests_ok"], model["requests_429"], model["tokens_charged"]) == (4, 4, 200)
    assert model["windows"] == [
        {"window_start": WINDOW_START, "requests": 2, "tokens": 100, "refused": 2},
        {"window_start": WINDOW_START + 1, "requests": 2, "tokens": 100, "refused": 2},
    ]
    assert (model["first_admitted_at"], model["last_admitted_at"]) == (WINDOW_START, WINDOW_START + 1.5)
    with urllib.request.urlopen(f"{server.root_url}/_emulator/stats", timeout=5) as response:
        assert json.loads(response.read()) == stats


# ----- fixed windows (rate_limit_algorithm="fixed_window") ----------------------------------------


def test_fixed_window_requests_past_the_token_budget_get_429_until_the_window_rolls(start_server) -> None:
    clock = ManualClock(WINDOW_START + 10)  # 50 s left in the minute-long window
    server, client = _limited(start_server, clock=clock, tokens_per_minute=200, **FIXED)

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


def test_fixed_window_requests_past_the_request_budget_get_429_of_type_requests(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    _, client = _limited(start_server, clock=clock, requests_per_minute=2, rate_window_seconds=1, **FIXED)

    first, second = _chat(client, "a"), _chat(client, "b")
    clock.advance(0.88)
    error, headers = _refusal(lambda: _chat(client, "c"))

    assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == [
        "1",
        "0",
    ]
    assert error["type"] == "requests"
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in 120ms." in error["message"]
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("120", "1")
    assert headers["x-ratelimit-reset-requests"] == "120ms"


def test_fixed_windows_are_aligned_to_the_epoch_and_short_windows_roll_in_real_time(start_server) -> None:
    server, client = _limited(start_server, tokens_per_minute=150, rate_window_seconds=0.5, **FIXED)

    def exhaust() -> Any:
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


def test_fixed_window_stats_count_accepted_and_refused_requests_and_the_tokens_per_window(start_server) -> None:
    clock = ManualClock(WINDOW_START)
    server, client = _limited(start_server, clock=clock, tokens_per_minute=150, rate_window_seconds=10, **FIXED)
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

    assert (stats["algorithm"], stats["burst_seconds"]) == ("fixed_window", None)
    assert (stats["window_seconds"], stats["requests_per_window"], stats["tokens_per_window"]) == (10, 10_000, 150)
    model = stats["models"]["gpt-4o-mini"]
    assert model["requests_ok"] == len(accepted)
    assert model["requests_429"] == len(refused) > 0
    assert model["tokens_charged"] == sum(cost for _, cost in accepted)
    assert (model["first_admitted_at"], model["last_admitted_at"]) == (accepted[0][0], accepted[-1][0])

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


# ----- the rest ----------------------------------------------------------------------------------


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

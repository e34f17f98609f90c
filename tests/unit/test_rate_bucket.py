"""The shared token bucket's rule: what any number of workers may send, and when."""

from __future__ import annotations

import pytest
from batchline.domain.rate_bucket import BucketShape, BucketState, Limits, paused, relearned, take

LIMITS = Limits(requests_per_minute=6_000, tokens_per_minute=480_000)  # 100 req/s, 8,000 tokens/s
SHAPE = BucketShape(safety=1.0, burst_seconds=1.0)


def learned_full(now: float = 0.0) -> BucketState:
    return BucketState.full(LIMITS, SHAPE, now, learned=True)


def test_a_burst_gets_one_seconds_worth_of_tokens_and_no_more():
    grant = take(learned_full(), SHAPE, [1_000] * 20, 0.0, at_most=20)
    assert grant.granted == 8  # 8,000 tokens: a minute's budget in one go would be refused by the provider
    assert grant.wait_seconds == pytest.approx(1_000 / 8_000)


def test_the_allowance_refills_continuously_not_at_the_turn_of_a_minute():
    state = take(learned_full(), SHAPE, [1_000] * 8, 0.0, at_most=8).state
    assert take(state, SHAPE, [1_000], 0.1, at_most=1).granted == 0
    later = take(state, SHAPE, [1_000, 1_000], 0.25, at_most=2)
    assert later.granted == 2  # 0.25 s refills 2,000 tokens


def test_sending_at_the_refill_rate_is_granted_all_the_way():
    state = take(learned_full(), SHAPE, [8_000], 0.0, at_most=1).state
    granted = 0
    for step in range(1, 601):  # 60 s of 100 tokens every 12.5 ms = 8,000 tokens/s
        answer = take(state, SHAPE, [100], step * 0.0125, at_most=1)
        state = answer.state
        granted += answer.granted
    assert granted == 600


def test_the_requests_bucket_limits_too():
    limits = Limits(requests_per_minute=120, tokens_per_minute=10_000_000)  # 2 req/s
    state = BucketState.full(limits, SHAPE, 0.0, learned=True)
    grant = take(state, SHAPE, [10] * 5, 0.0, at_most=5)
    assert grant.granted == 2
    assert grant.wait_seconds == pytest.approx(0.5)


def test_before_the_limits_are_learned_one_request_at_a_time():
    state = BucketState.full(LIMITS, SHAPE, 0.0, learned=False)
    assert take(state, SHAPE, [10] * 5, 0.0, at_most=5).granted == 1
    learned = relearned(state, SHAPE, 0.0, LIMITS, None)
    assert take(learned, SHAPE, [10] * 5, 0.0, at_most=5).granted == 5


def test_a_request_bigger_than_the_bucket_waits_for_a_full_bucket_then_leaves_it_in_debt():
    state = take(learned_full(), SHAPE, [4_000], 0.0, at_most=1).state
    assert take(state, SHAPE, [20_000], 0.0, at_most=1).granted == 0
    big = take(state, SHAPE, [20_000], 0.5, at_most=1)
    assert big.granted == 1
    after = take(big.state, SHAPE, [1_000], 0.5 + 1.0, at_most=1)
    assert after.granted == 0  # 12,000 tokens of debt take 1.5 s to refill before the next 1,000
    assert after.wait_seconds == pytest.approx((12_000 - 8_000 + 1_000) / 8_000)


def test_a_worker_whose_clock_is_behind_waits_for_the_latest_clock_written():
    state = take(learned_full(now=100.0), SHAPE, [8_000], 100.0, at_most=1).state
    behind = take(state, SHAPE, [1_000], 99.0, at_most=1)  # its clock reads 1 s less than the writer's
    assert behind.granted == 0
    assert behind.wait_seconds == pytest.approx(1.0 + 1_000 / 8_000)


def test_a_worker_whose_clock_is_ahead_moves_the_clock_once_and_grants_no_more_than_its_skew():
    state = take(learned_full(now=100.0), SHAPE, [8_000], 100.0, at_most=1).state
    ahead = take(state, SHAPE, [1_000] * 8, 100.5, at_most=8)  # 0.5 s ahead
    assert ahead.granted == 4
    on_time = take(ahead.state, SHAPE, [1_000] * 8, 100.5, at_most=8)
    assert on_time.granted == 0  # the clock it wrote does not refill again for the others


def test_a_429_holds_every_grant_back_until_its_retry_after():
    state = paused(learned_full(), SHAPE, 0.0, 2.0)
    held = take(state, SHAPE, [1], 1.0, at_most=1)
    assert held.granted == 0 and held.wait_seconds == pytest.approx(1.0)
    assert take(state, SHAPE, [1], 2.5, at_most=1).granted == 1


def test_the_safety_fraction_keeps_the_rate_below_the_limit():
    shape = BucketShape(safety=0.9, burst_seconds=1.0)
    state = BucketState.full(LIMITS, shape, 0.0, learned=True)
    assert take(state, shape, [1_000] * 10, 0.0, at_most=10).granted == 7  # 7,200 tokens of 8,000


def test_a_provider_reporting_fewer_tokens_left_than_we_hold_brings_our_level_down():
    state = relearned(learned_full(), SHAPE, 0.0, LIMITS, remaining_tokens=2_500)
    assert take(state, SHAPE, [1_000] * 5, 0.0, at_most=5).granted == 2

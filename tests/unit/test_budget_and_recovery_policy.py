"""What the budget and the recovery rules decide, with no AWS and no network."""

from __future__ import annotations

import pytest
from batchline.domain.budget import (
    BudgetPolicy,
    ScopeUsage,
    Stance,
    realtime_ceiling_nano,
    requested_job_cap,
    to_nano,
)
from batchline.domain.recovery import (
    failed_for_token_limit,
    is_retriable,
    is_stuck,
    next_poll_seconds,
    unanswered_reason,
)
from batchline.settings import SettingsError, load_settings

POLICY = BudgetPolicy(fallback_threshold=0.8, stop_threshold=1.0, fallback_models={"gpt-4o": "gpt-4o-mini"})


def scope(committed: int, hold: int = 0, cap: int | None = 1000) -> ScopeUsage:
    return ScopeUsage("job", cap, committed, hold)


def test_the_stance_follows_spend_and_in_flight_work_not_the_unused_hold():
    assert POLICY.stance(scope(700)) is Stance.NORMAL
    assert POLICY.stance(scope(900, hold=400)) is Stance.NORMAL  # 500 used; 400 only held for later
    assert POLICY.stance(scope(800)) is Stance.FALLBACK
    assert POLICY.stance(scope(1000)) is Stance.STOP
    assert POLICY.stance(scope(10**12, cap=None)) is Stance.NORMAL  # no cap, no stance
    assert POLICY.stance(scope(100), scope(950)) is Stance.FALLBACK  # the worse of job and month


def test_past_the_first_threshold_only_models_with_a_fallback_change():
    assert POLICY.model_for("gpt-4o", Stance.FALLBACK) == "gpt-4o-mini"
    assert POLICY.model_for("gpt-4.1", Stance.FALLBACK) == "gpt-4.1"
    assert POLICY.model_for("gpt-4o", Stance.NORMAL) == "gpt-4o"


def test_reservations_round_up_so_rounding_never_slips_past_a_cap():
    assert to_nano(1e-9) == 1
    assert to_nano(0.15) == 150_000_000
    assert to_nano(1.0000000001) == 1_000_000_001
    # 100 tokens of gpt-4o at the dearer (output) price: $10 per million
    assert realtime_ceiling_nano(2.5, 10.0, 100) == 1_000_000


def test_a_budget_given_with_the_upload_wins_and_a_bad_one_says_what_is_wrong():
    assert requested_job_cap({"batchline-budget-usd": "12.5"}, 100.0) == to_nano(12.5)
    assert requested_job_cap({}, 100.0) == to_nano(100.0)
    assert requested_job_cap({}, None) is None
    for bad in ("-1", "0", "ten", "nan", "inf"):
        with pytest.raises(ValueError, match="batchline-budget-usd"):
            requested_job_cap({"batchline-budget-usd": bad}, None)


def test_wrong_budget_settings_fail_with_a_message_naming_them():
    with pytest.raises(SettingsError, match="fallback_threshold"):
        load_settings({"budget": {"fallback_threshold": 0.9, "stop_threshold": 0.5}})
    with pytest.raises(SettingsError, match="no price: gpt-9"):
        load_settings({"budget": {"fallback_models": {"gpt-4o": "gpt-9"}}})
    with pytest.raises(SettingsError, match="budget.job_usd"):
        load_settings({"budget": {"job_usd": -5}})


def test_only_failures_worth_another_try_are_retried():
    assert is_retriable({"code": "batch_expired", "status_code": None})
    assert is_retriable({"code": "server_error", "status_code": 500})
    assert is_retriable({"code": "http_503", "status_code": 503})
    assert is_retriable({"code": "rate_limit_exceeded", "status_code": 429})
    assert not is_retriable({"code": "invalid_request_error", "status_code": 400})
    assert not is_retriable({"code": "batch_failed", "status_code": None})


def test_a_batch_failed_for_the_enqueued_token_limit_is_told_apart_from_other_failures():
    refused = {"status": "failed", "errors": {"data": [{"code": "token_limit_exceeded", "message": "full"}]}}
    invalid = {"status": "failed", "errors": {"data": [{"code": "invalid_json", "message": "bad", "line": 3}]}}
    assert failed_for_token_limit(refused) and not failed_for_token_limit(invalid)
    assert unanswered_reason(invalid) == (
        "invalid_json",
        "the provider failed the batch: bad (line 3 of the shard file)",
    )
    assert unanswered_reason({"status": "expired"})[0] == "batch_expired"


def test_a_long_batch_is_checked_less_often_as_its_own_progress_allows():
    now = 10_000.0
    started = {"status": "in_progress", "in_progress_at": now - 600}
    # A quarter done in 10 minutes: 30 minutes left, so look again in 15.
    quarter = {**started, "request_counts": {"total": 400, "completed": 90, "failed": 10}}
    assert next_poll_seconds(quarter, now, floor=60, ceiling=3600) == 900
    assert next_poll_seconds(quarter, now, floor=60, ceiling=600) == 600  # never past the ceiling
    # No progress yet: wait as long as it has run so far.
    assert next_poll_seconds({**started, "request_counts": {"total": 400}}, now, floor=60, ceiling=3600) == 600
    # Nearly done, validating or finalizing: the shortest wait.
    nearly = {**started, "request_counts": {"total": 400, "completed": 399}}
    assert next_poll_seconds(nearly, now, floor=60, ceiling=3600) == 60
    assert next_poll_seconds({"status": "finalizing"}, now, floor=60, ceiling=3600) == 60


def test_a_batch_is_stuck_only_in_validating_or_finalizing_past_the_limit():
    now = 10_000.0
    assert is_stuck({"status": "validating", "created_at": now - 601}, now, 600)
    assert not is_stuck({"status": "validating", "created_at": now - 599}, now, 600)
    assert is_stuck({"status": "finalizing", "created_at": 0, "finalizing_at": now - 601}, now, 600)
    assert not is_stuck({"status": "in_progress", "created_at": 0, "in_progress_at": 0}, now, 600)

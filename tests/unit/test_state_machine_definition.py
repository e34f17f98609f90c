"""The ASL file and its substitutions are one set, and the rendered machine has the promised shape."""

from __future__ import annotations

import json
import re

from batchline.topology import FUNCTIONS, STATE_MACHINE_ASL, asl_substitutions, render_asl, state_transitions


def rendered() -> dict:
    arns = {spec.name: f"arn:aws:lambda:us-east-1:123456789012:function:{spec.name}" for spec in FUNCTIONS}
    return json.loads(render_asl(asl_substitutions(arns, 7)))


def test_placeholders_and_substitution_keys_are_the_same_set():
    placeholders = set(re.findall(r"\$\{(\w+)\}", STATE_MACHINE_ASL.read_text()))
    keys = set(asl_substitutions({spec.name: "arn" for spec in FUNCTIONS}, 1))
    assert placeholders == keys


def _choices(state: dict) -> dict[str, str]:
    """What a Choice state does for each value it tests."""
    return {
        choice["StringEquals"] if "StringEquals" in choice else choice["BooleanEquals"]: choice["Next"]
        for choice in state["Choices"]
    }


def test_a_batch_job_polls_all_its_shards_in_one_submit_wait_check_choice_loop():
    states = rendered()["States"]
    assert rendered()["StartAt"] == "Plan"
    assert states["ChooseRoute"]["Default"] == "SubmitShards"
    assert states["SubmitShards"]["Next"] == "WaitForBatches"
    assert states["WaitForBatches"]["SecondsPath"] == "$.progress.wait_seconds"  # CheckShards' judgement
    assert states["WaitForBatches"]["Next"] == "CheckShards"
    assert states["CheckShards"]["Next"] == "AllShardsDone"
    finished, hand_over = states["AllShardsDone"]["Choices"]
    assert (finished["Variable"], finished["Next"]) == ("$.progress.finished", "Finalize")
    assert (hand_over["Variable"], hand_over["Next"]) == ("$.progress.hand_over", "HandOver")
    assert states["AllShardsDone"]["Default"] == "WaitForBatches"
    # Both steps work on the job as a whole, not on one shard: one loop's transitions per job.
    for name in ("SubmitShards", "CheckShards"):
        assert states[name]["Parameters"]["job_id.$"] == "$.plan.job_id"
    assert states["CheckShards"]["Parameters"]["polls.$"] == "$.progress.polls"


def test_a_job_polled_too_long_for_one_history_is_taken_over_by_a_new_execution_of_the_same_file():
    hand_over = rendered()["States"]["HandOver"]
    assert hand_over["Resource"] == "arn:aws:states:::states:startExecution"
    assert hand_over["Parameters"]["StateMachineArn.$"] == "$$.StateMachine.Id"
    assert hand_over["Parameters"]["Input"] == {
        "bucket.$": "$.bucket",
        "key.$": "$.key",
        "poll_seconds.$": "$.poll_seconds",
        "job_id.$": "$.plan.job_id",
        "handover_from.$": "$$.Execution.Id",
    }
    assert hand_over["End"] is True


def test_the_realtime_route_enqueues_with_the_configured_concurrency_then_waits_for_outcomes():
    states = rendered()["States"]
    assert states["EnqueueShards"]["Type"] == "Map" and states["EnqueueShards"]["MaxConcurrency"] == 7
    assert states["EnqueueShards"]["Next"] == "CheckRealtime"
    assert states["WaitForRealtime"]["Next"] == "CheckRealtime"
    assert states["WaitForRealtime"]["SecondsPath"] == "$.realtime.wait_seconds"  # the check says how long
    assert states["IsRealtimeDone"]["Default"] == "WaitForRealtime"
    assert {c["Variable"]: c["Next"] for c in states["IsRealtimeDone"]["Choices"]} == {
        "$.realtime.finished": "Finalize",
        "$.realtime.hand_over": "HandOver",  # a wait of days never fills one execution's history
    }


def test_a_realtime_job_taken_over_by_a_new_execution_only_waits_for_its_queued_requests():
    states = rendered()["States"]
    assert _choices(states["ChooseRoute"])["realtime_wait"] == "CheckRealtime"


def test_a_job_the_budget_refuses_goes_straight_to_finalize():
    assert _choices(rendered()["States"]["ChooseRoute"])["refused"] == "Finalize"


def test_failures_are_caught_and_still_reach_finalize():
    states = rendered()["States"]
    for name in ("Plan", "SubmitShards", "CheckShards", "EnqueueShards", "CheckRealtime"):
        assert states[name]["Catch"][0]["Next"] == "Finalize", name
    for name in ("SubmitShards", "CheckShards"):
        assert "TransientProviderError" in states[name]["Retry"][0]["ErrorEquals"]


def test_every_task_calls_a_known_function():
    arns = {f"arn:aws:lambda:us-east-1:123456789012:function:{spec.name}" for spec in FUNCTIONS}
    text = json.dumps(rendered())
    used = set(re.findall(r"arn:aws:lambda:[^\"]+", text))
    assert used == arns


def test_the_run_cost_counts_the_state_transitions_of_a_batch_jobs_path_through_the_machine():
    # A batch job polled twice passes Plan, ChooseRoute, SubmitShards, WaitForBatches, CheckShards,
    # AllShardsDone, WaitForBatches, CheckShards, AllShardsDone, Finalize, DidJobFail, JobDone:
    # twelve, whatever its number of shards.
    path = [
        ("plan", {"route": "batch"}),
        ("submit", {"finished": False}),
        ("check", {"finished": False}),
        ("check", {"finished": True}),
        ("finalize", {"status": "succeeded"}),
    ]
    assert sum(state_transitions(function, answer) for function, answer in path) == 12
    for spec in FUNCTIONS:
        assert state_transitions(spec.name, None) >= 1, spec.name


def test_the_run_cost_counts_the_state_transitions_of_a_realtime_jobs_path_through_the_machine():
    # Plan, ChooseRoute, EnqueueShards, two iterations of Enqueue, CheckRealtime, IsRealtimeDone,
    # WaitForRealtime, CheckRealtime, IsRealtimeDone, Finalize, DidJobFail, JobDone.
    path = [
        ("plan", {"route": "realtime"}),
        ("enqueue", {}),
        ("enqueue", {}),
        ("realtime_progress", {"finished": False, "billed_polls": 1}),
        ("realtime_progress", {"finished": True, "billed_polls": 1}),
        ("finalize", {"status": "succeeded"}),
    ]
    assert sum(state_transitions(function, answer) for function, answer in path) == 13


def test_a_local_run_polling_every_second_is_billed_the_polls_of_the_deployed_loop():
    # Sixty one-second checks stand for one deployed check of a minute: 59 bill nothing.
    local = [("realtime_progress", {"finished": False, "billed_polls": 0})] * 59
    local.append(("realtime_progress", {"finished": False, "billed_polls": 1}))
    assert sum(state_transitions(function, answer) for function, answer in local) == 3

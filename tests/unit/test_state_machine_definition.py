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


def test_map_runs_submit_wait_check_choice_collect_with_the_configured_concurrency():
    states = rendered()["States"]
    assert rendered()["StartAt"] == "Plan"
    shards = states["ProcessShards"]
    assert shards["Type"] == "Map" and shards["MaxConcurrency"] == 7
    # Each shard a child execution: 24 hours of polling must not fill the job's 25,000-event history.
    assert shards["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    inner = shards["ItemProcessor"]["States"]
    assert inner["Submit"]["Next"] == "WhatAfterSubmit"
    assert _choices(inner["WhatAfterSubmit"]) == {"done": "ShardDone", "wait_admission": "WaitForAdmission"}
    assert inner["WhatAfterSubmit"]["Default"] == "WaitForBatch"
    assert inner["WaitForBatch"]["SecondsPath"] == "$.batch.wait_seconds"  # Check's judgement
    assert inner["WaitForAdmission"]["SecondsPath"] == "$.poll_seconds"
    assert inner["Check"]["Next"] == "WhatAfterCheck"
    assert inner["WhatAfterCheck"]["Default"] == "WaitForBatch"
    # Then wait for any last requests that rounds sent realtime, and finalize.
    assert states["ProcessShards"]["Next"] == "CheckRealtime"


def test_a_shard_loops_back_to_submit_for_admission_resubmission_and_each_new_round():
    inner = rendered()["States"]["ProcessShards"]["ItemProcessor"]["States"]
    assert _choices(inner["WhatAfterCheck"]) == {"collect": "Collect", "resubmit": "WaitForAdmission"}
    assert inner["WaitForAdmission"]["Next"] == "Submit"
    assert inner["Collect"]["Next"] == "AnotherRound"
    assert _choices(inner["AnotherRound"]) == {True: "Submit"}
    assert inner["AnotherRound"]["Default"] == "ShardDone"


def test_a_job_the_budget_refuses_goes_straight_to_finalize():
    assert _choices(rendered()["States"]["ChooseRoute"]) == {"realtime": "EnqueueShards", "refused": "Finalize"}


def test_failures_are_caught_and_still_reach_finalize():
    states = rendered()["States"]
    assert states["Plan"]["Catch"][0]["Next"] == "Finalize"
    assert states["ProcessShards"]["Catch"][0]["Next"] == "Finalize"
    inner = states["ProcessShards"]["ItemProcessor"]["States"]
    for name in ("Submit", "Check", "Collect"):
        assert inner[name]["Catch"][0]["Next"] == "ShardFailed"
        assert "TransientProviderError" in inner[name]["Retry"][0]["ErrorEquals"]


def test_every_task_calls_a_known_function():
    arns = {f"arn:aws:lambda:us-east-1:123456789012:function:{spec.name}" for spec in FUNCTIONS}
    text = json.dumps(rendered())
    used = set(re.findall(r"arn:aws:lambda:[^\"]+", text))
    assert used == arns


def test_the_run_cost_counts_the_state_transitions_of_a_shards_path_through_the_machine():
    # Each Task's function adds the transitions around it to the job's AWS usage: a batch job of
    # one shard checked twice passes Plan, ChooseRoute, ProcessShards, then in the shard Submit,
    # WhatAfterSubmit, WaitForBatch, Check, WhatAfterCheck, WaitForBatch, Check, WhatAfterCheck,
    # Collect, AnotherRound, ShardDone, then CheckRealtime, IsRealtimeDone, Finalize, DidJobFail, JobDone.
    path = [
        ("plan", {"route": "batch"}),
        ("submit", {"action": "wait_batch"}),
        ("check", {"next": "wait"}),
        ("check", {"next": "collect"}),
        ("collect", {"retry": False}),
        ("realtime_progress", {"finished": True}),
        ("finalize", {"status": "succeeded"}),
    ]
    assert sum(state_transitions(function, answer) for function, answer in path) == 3 + 11 + 2 + 3
    for spec in FUNCTIONS:
        assert state_transitions(spec.name, None) >= 1, spec.name

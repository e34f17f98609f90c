"""The batch route's poll loop (SubmitShards, then CheckShards until finished) against in-memory
fakes of its ports and a Batch API on a clock the test moves: a day of batches in milliseconds.

Each test reads what a user would see: which requests were sent (and paid for) in which batch,
what each line ended as, and what the loop gave back (queue room, budget reservations).
"""

from __future__ import annotations

from batchline.domain.budget import to_nano
from batchline.domain.layout import JobLayout
from batchline.domain.statuses import ShardStatus
from loop_fakes import PREFIX, loop_world


def results_and_errors(world, job_id: str, shard_id: str, rounds: int) -> tuple[list[int], list[tuple[int, str]]]:
    layout = JobLayout(job_id, PREFIX)
    results, errors = [], []
    for number in range(rounds):
        results += [r["line"] for r in world.storage.jsonl(layout.round_results(shard_id, number))]
        errors += [(e["line"], e["code"]) for e in world.storage.jsonl(layout.round_errors(shard_id, number))]
    return sorted(results), sorted(errors)


def test_a_job_of_two_shards_is_submitted_checked_collected_and_finished_in_one_loop():
    world = loop_world()
    world.stage_shard("job", "00001", [1, 2, 3])
    world.stage_shard("job", "00002", [4, 5])

    answers = world.run("job")

    assert answers[0]["shards"] == {"ended": 0, "running": 2, "waiting": 0}
    assert answers[-1]["finished"] and answers[-1]["shards"]["ended"] == 2
    assert world.batches.sent() == [["c1", "c2", "c3"], ["c4", "c5"]], "one batch per shard, each line once"
    for shard_id, lines in (("00001", [1, 2, 3]), ("00002", [4, 5])):
        record = world.shard("job", shard_id)
        assert record.status == ShardStatus.COLLECTED and record.succeeded == len(lines)
        assert results_and_errors(world, "job", shard_id, 1) == (lines, [])
    assert world.admission.tickets == {}, "every round's room in the enqueued-token queue was given back"
    assert world.budgets.reserved == {} and set(world.budgets.settled) == {"job#00001#r0", "job#00002#r0"}
    assert world.metrics.counted.count("BatchesSubmitted") == 2


def test_a_batch_that_expires_sends_only_what_it_did_not_run_in_the_next_round():
    world = loop_world(plans=["expire", "complete"])
    world.stage_shard("job", "00001", [1, 2, 3, 4])

    world.run("job")

    assert world.batches.sent() == [["c1", "c2", "c3", "c4"], ["c3", "c4"]], "the answered half is never resent"
    record = world.shard("job", "00001")
    assert (record.status, record.round, record.rounds_collected, record.succeeded) == ("collected", 1, 2, 4)
    assert results_and_errors(world, "job", "00001", 2) == ([1, 2, 3, 4], [])


def test_a_partial_failure_retries_the_transient_errors_and_keeps_the_final_one():
    world = loop_world(plans=["complete", "complete"])
    world.batches.failing = {"c2"}  # a 500: worth another round
    world.batches.refusing = {"c3"}  # a 400: final
    world.stage_shard("job", "00001", [1, 2, 3])

    def heal_after_first_batch(*args, **kwargs):
        world.batches.failing = set()
        return original(*args, **kwargs)

    original = world.batches.create_batch
    world.batches.create_batch = lambda **kwargs: (
        original(**kwargs) if not world.batches.batches else heal_after_first_batch(**kwargs)
    )

    world.run("job")

    assert world.batches.sent() == [["c1", "c2", "c3"], ["c2"]]
    results, errors = results_and_errors(world, "job", "00001", 2)
    assert results == [1, 2] and [line for line, _ in errors] == [3]
    assert world.shard("job", "00001").failed == 1


def test_a_cancel_mid_batch_keeps_what_ran_and_a_resume_sends_only_the_rest():
    world = loop_world(plans=["complete", "complete"])
    world.stage_shard("job", "00001", [1, 2, 3, 4])
    first = world.loop.first_pass("job", poll_floor=None, attempt="a1", seconds_left=lambda: 900.0)
    assert first["shards"]["running"] == 1
    world.clock.advance(120)
    world.jobs.update_job("job", cancel_requested="2026-12-04T10:02:00", halted="cancelled by the user")

    answers = world.run("job")

    record = world.shard("job", "00001")
    assert answers[-1]["finished"] and record.status == ShardStatus.CANCELLED and record.round == 1
    assert results_and_errors(world, "job", "00001", 1)[0] == [1, 2], "what the batch ran before the cancel"
    # The same file uploaded again: Plan reopens the shard and lifts the cancel.
    world.jobs.update_job("job", remove=("cancel_requested", "halted"))
    world.jobs.update_shard("job", "00001", status=ShardStatus.PLANNED)
    world.run("job")

    assert world.batches.sent() == [["c1", "c2", "c3", "c4"], ["c3", "c4"]]
    assert results_and_errors(world, "job", "00001", 2)[0] == [1, 2, 3, 4]


def test_a_provider_failing_over_and_over_fails_that_shard_alone_and_gives_its_room_back():
    world = loop_world(step_attempts=2)
    world.stage_shard("job", "00001", [1])
    world.stage_shard("job", "00002", [2])
    world.loop.first_pass("job", poll_floor=None, attempt="a1", seconds_left=lambda: 900.0)
    world.clock.advance(3700)
    world.batches.transient_failures["batch-1"] = 2  # both checks of shard 00001 in the next two polls fail

    answers = [
        world.loop.poll("job", polls=n, poll_floor=None, attempt="b", seconds_left=lambda: 900.0) for n in (0, 1)
    ]

    failed = world.shard("job", "00001")
    assert failed.status == ShardStatus.FAILED and "503" in (failed.failure or "")
    assert world.shard("job", "00002").status == ShardStatus.COLLECTED, "the other shard went on"
    assert answers[-1]["finished"] and world.admission.tickets == {}


def test_a_batch_stuck_in_validating_is_reported_and_cancelled_once():
    world = loop_world(plans=["stay_validating", "complete"])
    world.stage_shard("job", "00001", [1, 2])

    world.run("job", max_polls=200)

    assert world.metrics.counted.count("BatchesStuck") == 1
    assert world.batches.batches["batch-1"].status == "cancelled"
    assert world.batches.sent()[1:] == [["c2"]], "its unanswered request went in the next round"
    assert world.jobs.get_job("job").stuck_batches == 1


# -- structured answers: an answer that fails its JSON Schema is billed, asked again, then reported --


def test_an_answer_failing_its_schema_is_asked_again_in_the_next_round_and_its_cost_still_counts():
    world = loop_world(plans=["complete", "complete"])
    world.batches.off_schema = {"c2": 1}  # its first answer leaves out the required label
    world.stage_shard("job", "00001", [1, 2, 3], structured=True)

    world.run("job")

    assert world.batches.sent() == [["c1", "c2", "c3"], ["c2"]], "only the answer off its schema is asked again"
    layout = JobLayout("job", PREFIX)
    results = world.storage.jsonl(layout.round_results("00001", 0)) + world.storage.jsonl(
        layout.round_results("00001", 1)
    )
    assert sorted(r["line"] for r in results) == [1, 2, 3]
    assert all(r["parsed"] == {"label": f"label of c{r['line']}", "score": 1} for r in results)
    assert world.storage.jsonl(layout.round_errors("00001", 0)) == [], "asked again, not an error"
    record = world.shard("job", "00001")
    assert (record.succeeded, record.failed, record.schema_retries) == (3, 0, 1)
    # Four answers were billed (the one off its schema too): the tokens and the budget count all four.
    assert (record.input_tokens, record.output_tokens) == (4 * 10, 4 * 5)
    one = world.loop.context.prices.batch_cost("gpt-4o-mini", 10, 5)
    assert world.budgets.settled == {"job#00001#r0": to_nano(3 * one), "job#00001#r1": to_nano(one)}
    assert record.cost_nano_usd == to_nano(3 * one) + to_nano(one)


def test_an_answer_failing_its_schema_on_every_attempt_ends_in_errors_with_the_validation_message():
    world = loop_world(plans=["complete"] * 3, max_attempts=3)
    world.batches.off_schema = {"c1": 99}
    world.stage_shard("job", "00001", [1, 2], structured=True)

    world.run("job")

    assert world.batches.sent() == [["c1", "c2"], ["c1"], ["c1"]], "max_attempts answers, no more"
    results, errors = results_and_errors(world, "job", "00001", 3)
    assert results == [2] and errors == [(1, "schema_invalid")]
    [error] = world.storage.jsonl(JobLayout("job", PREFIX).round_errors("00001", 2))
    assert error["message"] == "$: 'label' is a required property" and error["attempts"] == 3
    assert error["usage"]["prompt_tokens"] == 10, "the error says what the billed answer used"
    record = world.shard("job", "00001")
    assert (record.succeeded, record.failed, record.schema_retries) == (1, 1, 2)
    assert record.input_tokens == 4 * 10, "all four answers were billed"


def test_plain_requests_get_no_parsed_field_and_are_never_checked():
    world = loop_world()
    world.stage_shard("job", "00001", [1, 2])

    world.run("job")

    results = world.storage.jsonl(JobLayout("job", PREFIX).round_results("00001", 0))
    assert [r["line"] for r in results] == [1, 2] and not any("parsed" in r for r in results)
    assert world.shard("job", "00001").schema_retries == 0

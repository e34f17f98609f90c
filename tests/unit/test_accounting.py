from batchline.domain.accounting import JobAccount, merge_by_line


def test_merge_restores_input_order_across_streams():
    merged = merge_by_line([[(1, b"a"), (7, b"d")], [(2, b"b")], [], [(3, b"c"), (9, b"e")]])
    assert [line for line, _ in merged] == [1, 2, 3, 7, 9]


def test_status_and_message_say_what_happened():
    assert JobAccount("j", input_lines=3, succeeded=3).status() == "succeeded"
    partial = JobAccount("j", input_lines=3, succeeded=2, invalid=1)
    assert partial.status() == "completed_with_errors" and partial.unaccounted() == 0
    nothing_valid = JobAccount("j", input_lines=4, invalid=4)
    assert nothing_valid.status() == "failed"
    assert "no valid request" in nothing_valid.message() and "4" in nothing_valid.message()
    assert JobAccount("j", input_lines=0).message().startswith("the input file holds no request")
    assert JobAccount("j", input_lines=5, succeeded=2, failed=1).unaccounted() == 2


def test_a_job_the_user_cancelled_says_so_whatever_finished_before():
    cancelled = JobAccount("j", input_lines=8, succeeded=3, failed=5, cancelled="cancelled by the user")
    assert cancelled.status() == "cancelled"
    assert cancelled.message().startswith("cancelled by the user: 3 of 8 requests succeeded")
    assert "upload the same file again" in cancelled.message()
    nothing_done = JobAccount("j", input_lines=8, failed=8, cancelled="cancelled by the user")
    assert nothing_done.status() == "cancelled"  # not "failed": nothing went wrong


def test_the_account_of_an_interrupted_run_counts_what_has_no_outcome_yet_as_pending():
    account = JobAccount("j", input_lines=10, succeeded=4, failed=1, invalid=1, pending=4, interrupted="interrupted")
    summary = account.summary(outputs={}, started_at=None, finished_at="now")
    assert summary["status"] == "interrupted" and summary["pending"] == 4
    assert account.unaccounted() == 0, "every line is a result, an error or pending"
    assert "4 of 10 requests succeeded so far" in summary["message"] and "4 have no outcome yet" in summary["message"]
    finished = JobAccount("j", input_lines=2, succeeded=2).summary(outputs={}, started_at=None, finished_at="now")
    assert "pending" not in finished, "a finished job's summary has no pending count"

"""Every status a job, a shard or a provider's batch can be in: one enum each, the only spelling.

They are `StrEnum`s, so a status is stored in DynamoDB and written to summary.json as its plain
string, and one read back compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class ShardStatus(StrEnum):
    """Where a shard (one endpoint, one model, one batch at a time) stands."""

    PLANNED = "planned"  # cut by Plan, or reopened by a resume: its current round is to be sent
    WAITING_ADMISSION = "waiting_admission"  # no room yet in the model's enqueued-token limit
    UPLOADED = "uploaded"  # its round's file is at the provider, no batch yet
    SUBMITTING = "submitting"  # a batch is being created from it
    SUBMITTED = "submitted"  # its batch runs at the provider
    RETRYING = "retrying"  # a round ended with requests worth another try: the next round waits to go
    REALTIME = "realtime"  # its last few requests went to the realtime workers
    REALTIME_REQUEUE = "realtime_requeue"  # those requests are to be queued again (a resume)
    ENQUEUED = "enqueued"  # the realtime route: every request of it is on the queue
    COLLECTED = "collected"  # done: every request has its result or its final error
    FAILED = "failed"  # a step failed for good; its unfinished requests are errors saying why
    CANCELLED = "cancelled"  # the user cancelled the job; what it did not run waits for a resume
    BUDGET_STOPPED = "budget_stopped"  # not sent: the budget ran out


# Shards the poll loop passes over: nothing of theirs runs any more.
ENDED_SHARD_STATUSES = frozenset(
    {ShardStatus.COLLECTED, ShardStatus.FAILED, ShardStatus.CANCELLED, ShardStatus.BUDGET_STOPPED, ShardStatus.REALTIME}
)
# What a resume makes of a shard that stopped short (the same file uploaded again).
REOPENED_ON_RESUME = {
    ShardStatus.CANCELLED: ShardStatus.PLANNED,
    ShardStatus.BUDGET_STOPPED: ShardStatus.PLANNED,
    ShardStatus.FAILED: ShardStatus.PLANNED,
    ShardStatus.REALTIME: ShardStatus.REALTIME_REQUEUE,
}


class BatchStatus(StrEnum):
    """A provider's batch, as the Batch API reports it."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


BATCH_ENDED = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
BATCH_RUNNING = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)


def batch_has_ended(batch: dict[str, object]) -> bool:
    """Whether a provider's batch (as the Batch API returns it) runs no more."""
    return batch.get("status") in BATCH_ENDED


class JobStatus(StrEnum):
    """A job while it runs (the job item), then how it ended (the item and summary.json)."""

    PLANNING = "planning"
    RUNNING = "running"
    FINALIZING = "finalizing"  # planned with no valid request: straight to Finalize
    REFUSED = "refused"  # the budget cannot take it: nothing is sent
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    PAUSED = "paused"  # the budget stopped it; uploading the same file again resumes it
    CANCELLED = "cancelled"  # the user cancelled it; what finished is kept, uploading it again resumes it
    INTERRUPTED = "interrupted"  # a local run stopped watching it (Ctrl-C, --timeout); it goes on when run again

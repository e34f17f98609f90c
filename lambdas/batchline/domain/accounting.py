"""The job's closing account: outputs merged back into input order, and summary.json.

Each shard's results and errors are already sorted by line; the invalid lines too. A k-way merge
restores input order over all of them while holding one record per stream in memory, so a job
of any size is finalized in bounded memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from batchline.domain.statuses import JobStatus

STATUS_SUCCEEDED = JobStatus.SUCCEEDED
STATUS_COMPLETED_WITH_ERRORS = JobStatus.COMPLETED_WITH_ERRORS
STATUS_FAILED = JobStatus.FAILED
STATUS_PAUSED = JobStatus.PAUSED  # the budget stopped it; uploading the same file again resumes it
STATUS_CANCELLED = JobStatus.CANCELLED  # the user cancelled it; what finished is kept, uploading it again resumes it
# A local run stopped watching (Ctrl-C, --timeout) while the job was still running: its outputs so far,
# with the requests that have no outcome yet counted as pending; the same run again resumes the job.
STATUS_INTERRUPTED = JobStatus.INTERRUPTED


LineItem = TypeVar("LineItem")


def merge_by_line(streams: Iterable[Iterable[tuple[int, LineItem]]]) -> Iterator[tuple[int, LineItem]]:
    """Merge streams of (line, item) that are each sorted by line into one sorted stream."""
    return heapq.merge(*streams, key=lambda item: item[0])


@dataclass(slots=True)
class JobAccount:
    job_id: str
    input_lines: int = 0
    invalid: int = 0
    succeeded: int = 0
    failed: int = 0
    shards: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_usd_if_realtime: float = 0.0
    estimated_cost_usd: float = 0.0
    estimated_cost_usd_if_realtime: float = 0.0
    error_codes: dict[str, int] = field(default_factory=dict)
    failure: str | None = None
    route: str | None = None
    stopped_by_budget: int = 0  # requests never sent because the budget ran out: the job can resume
    details: dict[str, Any] = field(default_factory=dict)  # budget, recovery and resumption facts for the summary
    cancelled: str | None = None  # why, when the user cancelled the job
    interrupted: str | None = None  # why, for an account of a job still running (outputs so far)
    pending: int = 0  # requests of a still running job with no outcome yet
    cached: int = 0  # lines answered from the answer cache (counted in `succeeded`, not sent)
    duplicates: int = 0  # lines repeating an earlier line's request, given its outcome (not sent)
    cache_saved_usd: float = 0.0  # what the cached and copied answers would have cost on the job's route
    cache_kept: int = 0  # new answers written to the cache

    def status(self) -> str:
        if self.interrupted:
            return STATUS_INTERRUPTED
        if self.cancelled:
            return STATUS_CANCELLED
        if self.stopped_by_budget:
            return STATUS_PAUSED
        if self.succeeded == 0:
            return STATUS_FAILED
        if self.failed or self.invalid:
            return STATUS_COMPLETED_WITH_ERRORS
        return STATUS_SUCCEEDED

    def unaccounted(self) -> int:
        """Input lines with neither a result nor an error: must be zero, or something was lost."""
        return self.input_lines - self.invalid - self.succeeded - self.failed - self.pending

    def message(self) -> str:
        if self.interrupted:
            return (
                f"{self.interrupted}: {self.succeeded} of {self.input_lines} requests succeeded so far, "
                f"{self.failed + self.invalid} are in errors.jsonl and {self.pending} have no outcome yet; "
                "the job goes on where it stopped when the same file is run again"
            )
        if self.cancelled:
            return (
                f"{self.cancelled}: {self.succeeded} of {self.input_lines} requests succeeded before it stopped, the "
                f"rest are in errors.jsonl; upload the same file again to send what was not done"
            )
        if self.failure and self.succeeded == 0:
            return self.failure
        if self.input_lines == 0:
            return "the input file holds no request (it is empty or blank)"
        if self.succeeded + self.failed == 0 and self.invalid == self.input_lines:
            return (
                f"no valid request in the input: all {self.input_lines} non-blank lines are invalid (see errors.jsonl)"
            )
        if self.failure:
            return self.failure
        if self.stopped_by_budget:
            return (
                f"paused by the budget: {self.stopped_by_budget} requests were not sent (stage 'budget' in "
                f"errors.jsonl); upload the same file again with more budget to resume"
            )
        if self.succeeded == 0:
            return "no request succeeded (see errors.jsonl)"
        return f"{self.succeeded} of {self.input_lines} requests succeeded"

    def summary(self, *, outputs: dict[str, str], started_at: str | None, finished_at: str) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status(),
            "message": self.message(),
            "route": self.route,
            "input_lines": self.input_lines,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "invalid": self.invalid,
            "shards": self.shards,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "cost_usd_if_realtime": round(self.cost_usd_if_realtime, 6),
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
            "estimated_cost_usd_if_realtime": round(self.estimated_cost_usd_if_realtime, 6),
            "error_codes": dict(sorted(self.error_codes.items())),
            "cached": self.cached,
            "duplicates": self.duplicates,
            "cache_saved_usd": round(self.cache_saved_usd, 6),
            "cache_kept": self.cache_kept,
            **({"pending": self.pending} if self.interrupted else {}),
            **self.details,
            "outputs": outputs,
            "started_at": started_at,
            "finished_at": finished_at,
        }

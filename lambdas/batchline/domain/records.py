"""The job table's records as the application reads them: one typed record per job and per shard.

The job store (adapters/job_store.py) is the one place that turns a DynamoDB item into one of these
and back; everything above it reads attributes, never item keys spelled as strings. A record is a
snapshot: a use case changes the table through the store's updates and reads the record again.

Fields a record does not declare (the table's keys, counters another release added) are ignored
when an item is read, so an older function reads a newer item without failing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batchline.domain.statuses import BatchStatus, JobStatus, ShardStatus


class ShardRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One shard: its plan, where its current round stands, and what its collected rounds counted."""

    job_id: str
    shard_id: str
    url: str
    model: str
    requests: int
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    bytes: int = 0
    first_line: int = 0
    last_line: int = 0
    estimated_cost_usd: float = 0.0
    estimated_cost_usd_if_realtime: float = 0.0
    status: ShardStatus = ShardStatus.PLANNED

    # The current round: its number, size, the model it runs on (a budget fallback may change it).
    round: int = 0
    round_requests: int | None = None
    round_prompt_tokens: int | None = None
    round_model: str | None = None
    held_rounds: list[int] = []  # rounds whose held-back half of a refused file waits its turn
    refused_rounds: int = 0  # rounds the provider refused to run (they use no attempt)
    unnamed_refusals: int = 0  # refusals that named no line: the round was cut in two

    # Its batch at the provider, and the claim of the attempt creating it.
    input_file_id: str | None = None
    batch_id: str | None = None
    batch_status: BatchStatus | None = None
    request_counts: dict[str, int] = {}
    submit_claim: str | None = None
    submitting_at: str | None = None
    submitted_at: str | None = None
    collected_batch_id: str | None = None
    collected_at: str | None = None
    stuck_cancelled_batch: str | None = None
    stuck_status: BatchStatus | None = None

    # How it ended, or why it stopped.
    step_errors: int = 0  # transient failures of its step in a row
    failure: str | None = None
    stop_reason: str | None = None
    enqueued: int | None = None  # the realtime route: messages put on the queue

    # What its collected rounds counted.
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano_usd: int = 0
    cost_if_realtime_nano_usd: int = 0
    rounds_collected: int = 0
    schema_retries: int = 0  # answers that failed their JSON Schema, asked again in a next round

    @property
    def current_model(self) -> str:
        """The model its current round runs on."""
        return self.round_model or self.model

    def round_figures(self) -> tuple[int, int, float]:
        """(requests, prompt tokens, share of the shard) of its current round."""
        requests = self.requests if self.round_requests is None else self.round_requests
        prompt_tokens = self.prompt_tokens if self.round_prompt_tokens is None else self.round_prompt_tokens
        return requests, prompt_tokens, requests / max(1, self.requests)


class JobRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One job: its input, its plan, its route, its counters as it runs, and its summary once it ends."""

    job_id: str
    status: JobStatus = JobStatus.PLANNING
    bucket: str | None = None
    key: str | None = None
    mode: str | None = None  # as the upload asked (batch, realtime, auto)
    content_sha256: str | None = None
    spec_digest: str | None = None  # a table job's spec (domain/layout.spec_key): its rows are rendered by it
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    message: str | None = None
    failure: str | None = None

    # Its plan.
    planned: bool = False
    route: str | None = None
    input_lines: int | None = None
    valid: int = 0
    invalid: int = 0
    shard_count: int = 0
    prompt_tokens: int = 0
    estimated_cost_usd: float = 0.0
    estimated_cost_usd_if_realtime: float = 0.0
    refused: str | None = None  # the budget refused it, and why
    # The answer cache (domain/answer_cache.py): off for this job, answers Plan found in it, repeats of an
    # earlier line in the file; and, once finalized, what they saved and how many new answers were kept.
    no_cache: bool = False
    cached: int = 0
    duplicates: int = 0
    cache_saved_usd: float = 0.0
    cache_kept: int = 0

    # Its budget (the job's counters, kept on its item by the budget adapter).
    budget_month: str | None = None
    budget_cap_nano: int | None = None
    hold_nano: int = 0
    committed_nano: int = 0
    spent_nano: int = 0
    budget_paused: str | None = None
    fallback_model_used: str | None = None

    # Stops, resumes, hand-overs.
    cancel_requested: str | None = None
    halted: str | None = None  # why its sending stopped (cancelled, quota)
    execution_stopped: str | None = None
    resumes: int = 0
    resumed_at: str | None = None
    handovers: int = 0
    batches_resubmitted: int = 0
    stuck_batches: int = 0
    schema_retries: int = (
        0  # realtime answers that failed their JSON Schema, asked again (the shards count the batch route's)
    )

    # The realtime path's counters.
    realtime_expected: int = 0  # requests the batch route's last rounds sent realtime
    realtime_done: int = 0
    realtime_done_at_start: int = 0
    realtime_unsent: int = 0
    realtime_succeeded: int = 0
    realtime_failed: int = 0
    realtime_calls: int = 0
    realtime_rate_limited: int = 0
    realtime_input_tokens: int = 0
    realtime_output_tokens: int = 0
    realtime_cost_nano_usd: int = 0
    realtime_latency_seconds: float = 0.0
    realtime_updated_at: str | None = None
    realtime_poll_credit: float = 0.0

    # What it used in AWS (AwsUsage's counters, `aws_` and the field's name).
    aws_lambda_ms_mb: int = 0
    aws_lambda_requests: int = 0
    aws_state_transitions: int = 0
    aws_sqs_requests: int = 0
    aws_dynamodb_write_units: int = 0
    aws_dynamodb_read_units: int = 0
    aws_s3_write_requests: int = 0
    aws_s3_read_requests: int = 0
    aws_secrets_manager_calls: int = 0

    # Its summary, once finalized (summary.json's fields).
    shards: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_usd_if_realtime: float = 0.0
    pending: int = 0
    error_codes: dict[str, int] = {}
    outputs: dict[str, str] = {}
    budget: dict[str, Any] = {}
    recovery: dict[str, Any] = {}
    aws: dict[str, Any] = {}
    unaccounted_lines: int = 0
    table_error: str | None = None  # why a table job's results table could not be written

    @property
    def realtime_total(self) -> int:
        """The requests the realtime path must answer: all valid ones on the realtime route."""
        return self.valid if self.route == "realtime" else self.realtime_expected

    @property
    def realtime_outcomes(self) -> int:
        """Realtime requests with an outcome: answered, or not sent (stopped, out of budget)."""
        return self.realtime_done + self.realtime_unsent


def plain(record: JobRecord | ShardRecord) -> dict[str, Any]:
    """A record's fields as plain values (statuses as their strings): what the report and the
    command line's JSON show."""
    fields: dict[str, Any] = msgspec.to_builtins(record)
    return fields

"""Join a finished batch's files back to the input lines of its round, and plan the next round.

What the batch finished is kept. Requests that failed in a way worth another try (expired or
cancelled before running, 429, 5xx) make up the shard's next round while rounds remain; every
other failure is final and lands in errors.jsonl with the provider's message. An answer that does not
follow the JSON Schema its request asked for is billed but no success: it is asked again in the next
round as a transient failure is, and after the last attempt reported with the validation's message. The batch's room in
the enqueued-token ledger is given back and its budget reservation settled with its real cost.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchline.domain.answers import CODE_SCHEMA_INVALID, RoundSchemas
from batchline.domain.budget import month_of, to_nano
from batchline.domain.errors import ShardStateError
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import STAGE_PROVIDER, BatchJoiner, error_record
from batchline.domain.planning import decode_manifest_entry, encode_manifest_entry
from batchline.domain.records import JobRecord, ShardRecord
from batchline.domain.recovery import (
    RefusalSplit,
    bisect_limit,
    is_retriable,
    split_refused_round,
    unanswered_reason,
    validation_refusal,
)
from batchline.domain.shard_lines import provider_line_spans
from batchline.domain.statuses import ShardStatus
from batchline.observability import logger
from batchline.topology import BATCHES_RESUBMITTED_METRIC
from batchline.workflow.enqueueing import Enqueueing
from batchline.workflow.loop_context import LoopContext
from batchline.workflow.ports import LineSpool
from batchline.workflow.submission import ticket_for


@dataclass
class _Sorted:
    """A round's requests sorted by what happens to them next: kept (results, final errors), retried, held."""

    results: LineSpool
    errors: LineSpool
    attempts: int
    last_round: bool
    retry: dict[str, int] = field(default_factory=dict)  # custom_id -> line, for the next round
    hold: dict[str, int] = field(default_factory=dict)  # half of a refused round, held back for later
    final_failures: int = 0
    schema_retries: int = 0  # answers that failed their schema, asked again in the next round

    def failed(self, line: int, error: dict[str, Any]) -> None:
        if not self.last_round and is_retriable(error):
            self.retry[error["custom_id"]] = line
            if error.get("code") == CODE_SCHEMA_INVALID:
                self.schema_retries += 1
        else:
            self.final(line, error)

    def final(self, line: int, error: dict[str, Any]) -> None:
        self.errors.add(line, {**error, "attempts": self.attempts})
        self.final_failures += 1


class Collection:
    def __init__(self, context: LoopContext, enqueueing: Enqueueing) -> None:
        self.context = context
        self.enqueueing = enqueueing

    def collect_batch(self, job_id: str, shard_id: str, batch_id: str) -> dict[str, Any]:
        """Collect the shard's ended batch, once; retry says whether a next round waits to be submitted."""
        logger.append_keys(job_id=job_id, shard_id=shard_id, batch_id=batch_id)
        settings = self.context.settings
        layout = JobLayout(job_id, settings.output_prefix)
        storage = self.context.storage
        jobs = self.context.jobs
        record = jobs.get_shard(job_id, shard_id)
        if record is None:
            raise ShardStateError(f"shard {shard_id} of job {job_id} has no record; was the job planned?")
        if record.collected_batch_id == batch_id:
            logger.info("already collected")
            return {"shard_id": shard_id, "retry": record.status != ShardStatus.COLLECTED}
        round_number = record.round
        model = record.current_model
        job = jobs.get_job(job_id) or JobRecord(job_id=job_id)
        cancelled = bool(job.cancel_requested)
        refused_rounds = record.refused_rounds  # rounds the provider never ran: no attempt used
        attempts = round_number + 1 - refused_rounds
        batch = self.context.batches.retrieve_batch(batch_id)

        manifest = dict(
            (custom_id, line)
            for line, custom_id in map(
                decode_manifest_entry, storage.lines(layout.round_manifest(shard_id, round_number))
            )
        )
        # The JSON Schemas the round's requests ask their answers to follow, read once (most rounds: one, or none).
        schemas = RoundSchemas(storage.lines(layout.round_requests(shard_id, round_number)))
        joiner = BatchJoiner(manifest=manifest, model=model, prices=self.context.prices, schemas=schemas)
        # A cancel does not make this the last round: what the batch did not run is written as the next
        # round as ever, and the shard ends "cancelled" on it, so that the same file uploaded again
        # sends exactly those requests (Finalize reports them as cancelled meanwhile).
        sorted_ = _Sorted(
            results=self.context.spool(),
            errors=self.context.spool(),
            attempts=attempts,
            last_round=attempts >= settings.max_attempts,
        )
        refusal = validation_refusal(batch)
        split = self._split_refusal(layout, shard_id, round_number, refusal, record) if refusal is not None else None
        try:
            if split is not None:
                for refused in split.refused:
                    line = manifest[refused.custom_id]
                    error = error_record(
                        custom_id=refused.custom_id,
                        line=line,
                        stage=STAGE_PROVIDER,
                        code=refused.code,
                        message=refused.message,
                    )
                    sorted_.final(line, error)
                for custom_id in split.retry + split.hold:
                    (sorted_.retry if custom_id in split.retry else sorted_.hold)[custom_id] = manifest[custom_id]
            else:
                self._join(batch, joiner, sorted_)
            for spool, key in (
                (sorted_.results, layout.round_results(shard_id, round_number)),
                (sorted_.errors, layout.round_errors(shard_id, round_number)),
            ):
                with storage.writer(key) as writer:
                    for raw in spool.in_line_order():
                        writer.write(raw)
        finally:
            sorted_.results.close()
            sorted_.errors.close()

        held_rounds = list(record.held_rounds)
        if sorted_.hold:
            with storage.writer(layout.round_held(shard_id, round_number)) as writer:
                for custom_id, line in sorted_.hold.items():
                    writer.write(encode_manifest_entry(line, custom_id))
            held_rounds.append(round_number)
        sources = [(round_number, sorted_.retry)] if sorted_.retry else []
        if held_rounds and not sorted_.hold:
            # A round has run (or been sorted) since the last split: the half held back goes next, with
            # whatever this round left to retry, last held first, as a binary search takes it.
            held_round = held_rounds.pop()
            sources.append((held_round, self._held(layout, shard_id, held_round)))
        next_requests = sum(len(wanted) for _, wanted in sources)
        if sources:
            self._write_next_round(layout, shard_id, round_number, sources)
        to_realtime = 0 < next_requests <= settings.realtime_below_requests and not held_rounds and not cancelled

        tally = joiner.tally
        ticket = ticket_for(job_id, shard_id, round_number)
        month = job.budget_month or month_of(self.context.clock.now())
        self.context.budgets.settle(job_id, month, ticket, to_nano(tally.cost_usd))
        self.context.admission.release(model, ticket)

        additions = {
            "succeeded": tally.succeeded,
            "failed": sorted_.final_failures,
            "input_tokens": tally.input_tokens,
            "output_tokens": tally.output_tokens,
            "cost_nano_usd": to_nano(tally.cost_usd),
            "cost_if_realtime_nano_usd": to_nano(tally.cost_usd_if_realtime),
            "rounds_collected": 1,
            "schema_retries": sorted_.schema_retries,
        }
        fields: dict[str, Any] = {
            "batch_status": batch["status"],
            "collected_at": self.context.now_iso(),
            "held_rounds": held_rounds,
        }
        if split is not None:
            fields["refused_rounds"] = refused_rounds + 1
            if split.bisected or not any(f.get("line") for f in refusal or ()):
                fields["unnamed_refusals"] = record.unnamed_refusals + 1
        if cancelled and sources:
            # Not sent on: the round waits, as a shard cancelled before it was submitted does.
            _, prompt_tokens, _ = record.round_figures()
            fields |= {
                "status": ShardStatus.CANCELLED,
                "round": round_number + 1,
                "round_requests": next_requests,
                "round_prompt_tokens": round(prompt_tokens * next_requests / max(1, len(manifest))),
            }
        elif to_realtime:
            # Too few left to be worth a batch (and a day's wait): the realtime workers take them.
            fields |= {"status": ShardStatus.REALTIME, "round": round_number + 1, "round_requests": next_requests}
        elif sources:
            _, prompt_tokens, _ = record.round_figures()
            fields |= {
                "status": ShardStatus.RETRYING,
                "round": round_number + 1,
                "round_requests": next_requests,
                "round_prompt_tokens": round(prompt_tokens * next_requests / max(1, len(manifest))),
            }
            self.context.metrics.count(BATCHES_RESUBMITTED_METRIC)
        else:
            fields["status"] = ShardStatus.COLLECTED
        counted = jobs.collect_round(
            job_id,
            shard_id,
            batch_id=batch_id,
            additions=additions,
            fields=fields,
            removals=("batch_id", "input_file_id", "round_model", "submit_claim"),
        )
        # A point of the report's requests-over-time chart; written once per round, whatever `counted` says.
        jobs.record_progress(
            job_id,
            f"{shard_id}#{round_number}",
            at=fields["collected_at"],
            route="batch",
            done=tally.succeeded + sorted_.final_failures,
            shard_id=shard_id,
            round=round_number,
            batch_id=batch_id,
            submitted_at=record.submitted_at,
            requests=len(manifest),
            batch_status=batch["status"],
        )
        if to_realtime and counted:
            jobs.add_to_job(job_id, realtime_expected=next_requests)
            self.enqueueing.enqueue_round(job_id, shard_id, round_number + 1)
        logger.info(
            "round collected",
            extra={
                "round": round_number,
                "succeeded": tally.succeeded,
                "final_errors": sorted_.final_failures,
                "to_retry": next_requests,
                "schema_retries": sorted_.schema_retries,
                "refused": split is not None,
                "counted": counted,
            },
        )
        return {"shard_id": shard_id, "retry": bool(sources) and not to_realtime and not cancelled}

    def _join(self, batch: dict[str, Any], joiner: BatchJoiner, sorted_: _Sorted) -> None:
        """The batch's output and error files joined to the round's lines; what it left unanswered too."""
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                for line, outcome, succeeded in joiner.provider_lines(self.context.batches.file_lines(file_id)):
                    if succeeded:
                        sorted_.results.add(line, outcome)
                    else:
                        sorted_.failed(line, outcome)
        for line, outcome, _ in joiner.unanswered(*unanswered_reason(batch)):
            sorted_.failed(line, outcome)

    def _write_next_round(
        self, layout: JobLayout, shard_id: str, round_number: int, sources: list[tuple[int, dict[str, int]]]
    ) -> None:
        """The next round's requests and manifest: for each (round, {custom_id: line}) of `sources`,
        those requests of that round's file, merged in line order as every round file is kept."""
        storage = self.context.storage

        def wanted_lines(source_round: int, wanted: dict[str, int]) -> Iterator[tuple[int, str, bytes]]:
            for raw in storage.lines(layout.round_requests(shard_id, source_round)):
                if raw:
                    custom_id = orjson.loads(raw)["custom_id"]
                    line = wanted.get(custom_id)
                    if line is not None:
                        yield line, custom_id, raw

        with (
            storage.writer(layout.round_requests(shard_id, round_number + 1)) as requests,
            storage.writer(layout.round_manifest(shard_id, round_number + 1)) as manifest,
        ):
            for line, custom_id, raw in heapq.merge(*(wanted_lines(*source) for source in sources)):
                requests.write(raw + b"\n")
                manifest.write(encode_manifest_entry(line, custom_id))

    def _split_refusal(
        self,
        layout: JobLayout,
        shard_id: str,
        round_number: int,
        failures: list[dict[str, Any]],
        record: ShardRecord,
    ) -> RefusalSplit:
        """Which requests of a round the provider refused to run are errors, tried next, or held."""
        storage = self.context.storage
        raw_lines = [raw for raw in storage.lines(layout.round_requests(shard_id, round_number)) if raw]
        return split_refused_round(
            [orjson.loads(raw)["custom_id"] for raw in raw_lines],
            provider_line_spans(raw_lines),
            failures,
            unnamed_refusals=record.unnamed_refusals,
            limit=bisect_limit(record.requests),
        )

    def _held(self, layout: JobLayout, shard_id: str, round_number: int) -> dict[str, int]:
        entries = self.context.storage.lines(layout.round_held(shard_id, round_number))
        return {custom_id: line for line, custom_id in map(decode_manifest_entry, entries)}

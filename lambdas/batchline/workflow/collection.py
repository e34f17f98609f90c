"""Join a finished batch's files back to the input lines of its round, and plan the next round.

What the batch finished is kept. Requests that failed in a way worth another try (expired or
cancelled before running, 429, 5xx) make up the shard's next round while rounds remain; every
other failure is final and lands in errors.jsonl with the provider's message. The batch's room in
the enqueued-token ledger is given back and its budget reservation settled with its real cost.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.job_store import now_iso
from batchline.adapters.spool import LineOrderedSpool
from batchline.composition import price_book
from batchline.domain.budget import month_of, to_nano
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import STAGE_PROVIDER, BatchJoiner, error_record
from batchline.domain.planning import decode_manifest_entry, encode_manifest_entry
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
from batchline.handlers.dependencies import (
    admission_ledger,
    budgets,
    environment,
    job_store,
    openai_batches,
    output_objects,
)
from batchline.observability import logger, metrics
from batchline.topology import BATCHES_RESUBMITTED_METRIC
from batchline.workflow.enqueueing import enqueue_round
from batchline.workflow.submission import round_figures, ticket_for


def _write_next_round(
    layout: JobLayout, shard_id: str, round_number: int, sources: list[tuple[int, dict[str, int]]]
) -> None:
    """The next round's requests and manifest: for each (round, {custom_id: line}) of `sources`,
    those requests of that round's file, merged in line order as every round file is kept."""
    storage = output_objects()

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
    layout: JobLayout, shard_id: str, round_number: int, failures: list[dict], record: dict[str, Any]
) -> RefusalSplit:
    """Which requests of a round the provider refused to run are errors, tried next, or held."""
    raw_lines = [raw for raw in output_objects().lines(layout.round_requests(shard_id, round_number)) if raw]
    return split_refused_round(
        [orjson.loads(raw)["custom_id"] for raw in raw_lines],
        provider_line_spans(raw_lines),
        failures,
        unnamed_refusals=int(record.get("unnamed_refusals", 0)),
        limit=bisect_limit(int(record["requests"])),
    )


def collect_batch(shard: dict[str, Any], batch_id: str) -> dict[str, Any]:
    """Collect the shard's ended batch, once; retry says whether a next round waits to be submitted."""
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id, batch_id=batch_id)
    settings = environment().settings
    layout = JobLayout(job_id, settings.output_prefix)
    storage = output_objects()
    store = job_store()
    gateway = openai_batches()
    record = store.get_shard(job_id, shard_id) or {}
    if record.get("collected_batch_id") == batch_id:
        logger.info("already collected")
        return {"shard_id": shard_id, "retry": record.get("status") != ShardStatus.COLLECTED}
    round_number = int(record.get("round", 0))
    model = record.get("round_model") or shard["model"]
    job = store.get_job(job_id) or {}
    cancelled = bool(job.get("cancel_requested"))
    refused_rounds = int(record.get("refused_rounds", 0))  # rounds the provider never ran: no attempt used
    attempts = round_number + 1 - refused_rounds
    # A cancel does not make this the last round: what the batch did not run is written as the next
    # round as ever, and the shard ends "cancelled" on it, so that the same file uploaded again
    # sends exactly those requests (Finalize reports them as cancelled meanwhile).
    last_round = attempts >= settings.recovery.max_attempts
    batch = gateway.retrieve_batch(batch_id)

    manifest = dict(
        (custom_id, line)
        for line, custom_id in map(decode_manifest_entry, storage.lines(layout.round_manifest(shard_id, round_number)))
    )
    joiner = BatchJoiner(manifest=manifest, model=model, prices=price_book(settings))
    results, errors = LineOrderedSpool(), LineOrderedSpool()
    retry: dict[str, int] = {}
    hold: dict[str, int] = {}
    final_failures = 0

    def failed(line: int, error: dict) -> None:
        nonlocal final_failures
        if not last_round and is_retriable(error):
            retry[error["custom_id"]] = line
        else:
            errors.add(line, {**error, "attempts": attempts})
            final_failures += 1

    refusal = validation_refusal(batch)
    split = _split_refusal(layout, shard_id, round_number, refusal, record) if refusal is not None else None
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
                errors.add(line, {**error, "attempts": attempts})
                final_failures += 1
            for custom_id in split.retry + split.hold:
                (retry if custom_id in split.retry else hold)[custom_id] = manifest[custom_id]
        else:
            for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
                if file_id:
                    for line, outcome, succeeded in joiner.provider_lines(gateway.file_lines(file_id)):
                        if succeeded:
                            results.add(line, outcome)
                        else:
                            failed(line, outcome)
            for line, outcome, _ in joiner.unanswered(*unanswered_reason(batch)):
                failed(line, outcome)
        for spool, key in (
            (results, layout.round_results(shard_id, round_number)),
            (errors, layout.round_errors(shard_id, round_number)),
        ):
            with storage.writer(key) as writer:
                for raw in spool.in_line_order():
                    writer.write(raw)
    finally:
        results.close()
        errors.close()

    held_rounds = [int(number) for number in record.get("held_rounds") or []]
    if hold:
        with storage.writer(layout.round_held(shard_id, round_number)) as writer:
            for custom_id, line in hold.items():
                writer.write(encode_manifest_entry(line, custom_id))
        held_rounds.append(round_number)
    sources = [(round_number, retry)] if retry else []
    if held_rounds and not hold:
        # A round has run (or been sorted) since the last split: the half held back goes next, with
        # whatever this round left to retry, last held first, as a binary search takes it.
        held_round = held_rounds.pop()
        sources.append((held_round, _held(layout, shard_id, held_round)))
    next_requests = sum(len(wanted) for _, wanted in sources)
    if sources:
        _write_next_round(layout, shard_id, round_number, sources)
    to_realtime = 0 < next_requests <= settings.recovery.realtime_below_requests and not held_rounds and not cancelled

    tally = joiner.tally
    ticket = ticket_for(job_id, shard_id, round_number)
    budgets().settle(job_id, job.get("budget_month") or month_of(), ticket, to_nano(tally.cost_usd))
    admission_ledger().release(model, ticket)

    additions = {
        "succeeded": tally.succeeded,
        "failed": final_failures,
        "input_tokens": tally.input_tokens,
        "output_tokens": tally.output_tokens,
        "cost_nano_usd": to_nano(tally.cost_usd),
        "cost_if_realtime_nano_usd": to_nano(tally.cost_usd_if_realtime),
        "rounds_collected": 1,
    }
    fields: dict[str, Any] = {"batch_status": batch["status"], "collected_at": now_iso(), "held_rounds": held_rounds}
    if split is not None:
        fields["refused_rounds"] = refused_rounds + 1
        if split.bisected or not any(f.get("line") for f in refusal or ()):
            fields["unnamed_refusals"] = int(record.get("unnamed_refusals", 0)) + 1
    if cancelled and sources:
        # Not sent on: the round waits, as a shard cancelled before it was submitted does.
        _, prompt_tokens, _ = round_figures(record)
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
        _, prompt_tokens, share = round_figures(record)
        fields |= {
            "status": ShardStatus.RETRYING,
            "round": round_number + 1,
            "round_requests": next_requests,
            "round_prompt_tokens": round(prompt_tokens * next_requests / max(1, len(manifest))),
        }
        metrics.add_metric(name=BATCHES_RESUBMITTED_METRIC, unit=MetricUnit.Count, value=1)
    else:
        fields["status"] = ShardStatus.COLLECTED
    counted = store.collect_round(
        job_id,
        shard_id,
        batch_id=batch_id,
        additions=additions,
        fields=fields,
        removals=("batch_id", "input_file_id", "round_model", "submit_claim"),
    )
    # A point of the report's requests-over-time chart; written once per round, whatever `counted` says.
    store.record_progress(
        job_id,
        f"{shard_id}#{round_number}",
        at=fields["collected_at"],
        route="batch",
        done=tally.succeeded + final_failures,
        shard_id=shard_id,
        round=round_number,
        batch_id=batch_id,
        submitted_at=record.get("submitted_at"),
        requests=len(manifest),
        batch_status=batch["status"],
    )
    if to_realtime and counted:
        store.add_to_job(job_id, realtime_expected=next_requests)
        enqueue_round(job_id, shard_id, round_number + 1)
    logger.info(
        "round collected",
        extra={
            "round": round_number,
            "succeeded": tally.succeeded,
            "final_errors": final_failures,
            "to_retry": next_requests,
            "refused": split is not None,
            "counted": counted,
        },
    )
    return {"shard_id": shard_id, "retry": bool(sources) and not to_realtime and not cancelled}


def _held(layout: JobLayout, shard_id: str, round_number: int) -> dict[str, int]:
    return {
        custom_id: line
        for line, custom_id in map(
            decode_manifest_entry, output_objects().lines(layout.round_held(shard_id, round_number))
        )
    }

"""Join a finished batch's files back to the input lines of its round, and plan the next round.

What the batch finished is kept. Requests that failed in a way worth another try (expired or
cancelled before running, 429, 5xx) make up the shard's next round while rounds remain; every
other failure is final and lands in errors.jsonl with the provider's message. The batch's room in
the enqueued-token ledger is given back and its budget reservation settled with its real cost.
"""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.job_store import now_iso
from batchline.adapters.spool import LineOrderedSpool
from batchline.domain.budget import month_of, to_nano
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import BatchJoiner
from batchline.domain.planning import decode_manifest_entry, encode_manifest_entry
from batchline.domain.recovery import is_retriable, unanswered_reason
from batchline.handlers.dependencies import (
    admission_ledger,
    budgets,
    environment,
    job_store,
    logger,
    metrics,
    openai_batches,
    output_objects,
)
from batchline.topology import BATCHES_RESUBMITTED_METRIC
from batchline.workflow.enqueueing import enqueue_round
from batchline.workflow.submission import round_figures, ticket_for


def _write_next_round(layout: JobLayout, shard_id: str, round_number: int, retry: dict[str, int]) -> None:
    """The requests to try again, copied from this round's file in their order, with their manifest."""
    storage = output_objects()
    source = layout.round_requests(shard_id, round_number)
    with (
        storage.writer(layout.round_requests(shard_id, round_number + 1)) as requests,
        storage.writer(layout.round_manifest(shard_id, round_number + 1)) as manifest,
    ):
        for raw in storage.lines(source):
            if not raw:
                continue
            custom_id = orjson.loads(raw)["custom_id"]
            line = retry.get(custom_id)
            if line is not None:
                requests.write(raw + b"\n")
                manifest.write(encode_manifest_entry(line, custom_id))


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
        return {"shard_id": shard_id, "retry": record.get("status") != "collected"}
    round_number = int(record.get("round", 0))
    model = record.get("round_model") or shard["model"]
    job = store.get_job(job_id) or {}
    last_round = round_number + 1 >= settings.recovery.max_attempts or bool(job.get("cancel_requested"))
    batch = gateway.retrieve_batch(batch_id)

    manifest = dict(
        (custom_id, line)
        for line, custom_id in map(decode_manifest_entry, storage.lines(layout.round_manifest(shard_id, round_number)))
    )
    joiner = BatchJoiner(manifest=manifest, model=model, prices=settings.price_book())
    results, errors = LineOrderedSpool(), LineOrderedSpool()
    retry: dict[str, int] = {}

    def failed(line: int, error: dict) -> None:
        if not last_round and is_retriable(error):
            retry[error["custom_id"]] = line
        else:
            errors.add(line, {**error, "attempts": round_number + 1})

    try:
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
    to_realtime = 0 < len(retry) <= settings.recovery.realtime_below_requests
    if retry:
        _write_next_round(layout, shard_id, round_number, retry)

    tally = joiner.tally
    ticket = ticket_for(job_id, shard_id, round_number)
    budgets().settle(job_id, job.get("budget_month") or month_of(), ticket, to_nano(tally.cost_usd))
    admission_ledger().release(model, ticket)

    additions = {
        "succeeded": tally.succeeded,
        "failed": tally.failed - len(retry),
        "input_tokens": tally.input_tokens,
        "output_tokens": tally.output_tokens,
        "cost_nano_usd": to_nano(tally.cost_usd),
        "cost_if_realtime_nano_usd": to_nano(tally.cost_usd_if_realtime),
        "rounds_collected": 1,
    }
    fields: dict[str, Any] = {"batch_status": batch["status"], "collected_at": now_iso()}
    if to_realtime:
        # Too few left to be worth a batch (and a day's wait): the realtime workers take them.
        fields |= {"status": "realtime", "round": round_number + 1, "round_requests": len(retry)}
    elif retry:
        _, prompt_tokens, share = round_figures(record)
        fields |= {
            "status": "retrying",
            "round": round_number + 1,
            "round_requests": len(retry),
            "round_prompt_tokens": round(prompt_tokens * len(retry) / max(1, len(manifest))),
        }
        metrics.add_metric(name=BATCHES_RESUBMITTED_METRIC, unit=MetricUnit.Count, value=1)
    else:
        fields["status"] = "collected"
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
        done=tally.succeeded + tally.failed - len(retry),
        shard_id=shard_id,
        round=round_number,
        batch_id=batch_id,
        submitted_at=record.get("submitted_at"),
        requests=len(manifest),
        batch_status=batch["status"],
    )
    if to_realtime and counted:
        store.add_to_job(job_id, realtime_expected=len(retry))
        enqueue_round(job_id, shard_id, round_number + 1)
    logger.info(
        "collected",
        extra={
            "round": round_number,
            "succeeded": tally.succeeded,
            "final_errors": tally.failed - len(retry),
            "to_retry": len(retry),
            "counted": counted,
        },
    )
    return {"shard_id": shard_id, "retry": bool(retry) and not to_realtime}

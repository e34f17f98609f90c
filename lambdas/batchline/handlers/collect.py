"""Collect: join a finished batch's output and error files back to the shard's input lines."""

from __future__ import annotations

from typing import Any

from batchline.adapters.job_store import now_iso
from batchline.adapters.spool import LineOrderedSpool
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import BatchJoiner
from batchline.domain.planning import decode_manifest_entry
from batchline.handlers.dependencies import environment, job_store, logger, openai_batches, output_objects

# Why requests are missing from a batch's files, by the batch's final status.
UNANSWERED_REASONS = {
    "failed": ("batch_failed", "the provider failed the whole batch"),
    "expired": ("batch_expired", "the batch expired before this request was executed"),
    "cancelled": ("batch_cancelled", "the batch was cancelled before this request was executed"),
    "completed": ("missing_from_output", "the batch completed without a result or an error for this request"),
}


def _unanswered_reason(batch: dict) -> tuple[str, str]:
    code, message = UNANSWERED_REASONS.get(batch["status"], ("missing_from_output", "no outcome from the provider"))
    failures = (batch.get("errors") or {}).get("data") or []
    if batch["status"] == "failed" and failures:
        first = failures[0]
        code = first.get("code") or code
        message = f"the provider failed the batch: {first.get('message') or code}"
        if first.get("line") is not None:
            message += f" (line {first['line']} of the shard file)"
    return code, message


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    shard, batch_id = event["shard"], event["batch"]["batch_id"]
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id)
    settings = environment().settings
    layout = JobLayout(job_id, settings.output_prefix)
    storage = output_objects()
    gateway = openai_batches()
    batch = gateway.retrieve_batch(batch_id)

    manifest = dict(
        (custom_id, line)
        for line, custom_id in map(decode_manifest_entry, storage.lines(layout.shard_manifest(shard_id)))
    )
    joiner = BatchJoiner(manifest=manifest, model=shard["model"], prices=settings.price_book())
    results, errors = LineOrderedSpool(), LineOrderedSpool()
    try:
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                for line, record, succeeded in joiner.provider_lines(gateway.file_lines(file_id)):
                    (results if succeeded else errors).add(line, record)
        for line, record, _ in joiner.unanswered(*_unanswered_reason(batch)):
            errors.add(line, record)
        for spool, key in ((results, layout.shard_results(shard_id)), (errors, layout.shard_errors(shard_id))):
            with storage.writer(key) as writer:
                for raw in spool.in_line_order():
                    writer.write(raw)
    finally:
        results.close()
        errors.close()

    tally = joiner.tally.as_dict()
    job_store().update_shard(
        job_id, shard_id, status="collected", batch_status=batch["status"], collected_at=now_iso(), **tally
    )
    logger.info("collected", extra={"succeeded": tally["succeeded"], "failed": tally["failed"]})
    return {"shard_id": shard_id, "succeeded": tally["succeeded"], "failed": tally["failed"]}

"""Submit: upload one shard's request file to OpenAI and create its batch, exactly once."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from batchline.adapters.job_store import now_iso
from batchline.domain.errors import ShardStateError
from batchline.domain.layout import JobLayout
from batchline.handlers.dependencies import environment, job_store, logger, openai_batches, output_objects


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    shard = event["shard"]
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id)
    settings = environment().settings
    store = job_store()
    record = store.get_shard(job_id, shard_id)
    if record is None:
        raise ShardStateError(f"shard {shard_id} of job {job_id} has no record; was the job planned?")
    if record.get("batch_id"):
        # A retried Submit must not create (and pay for) a second batch.
        logger.info("already submitted", extra={"batch_id": record["batch_id"]})
        return {"batch_id": record["batch_id"], "status": record.get("batch_status"), "terminal": False}

    gateway = openai_batches()
    file_id = record.get("input_file_id")
    if not file_id:
        layout = JobLayout(job_id, settings.output_prefix)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{job_id}-{shard_id}.jsonl"
            output_objects().download(layout.shard_requests(shard_id), str(path))
            file_id = gateway.upload_batch_file(path)
        store.update_shard(job_id, shard_id, input_file_id=file_id, status="uploaded")

    batch = gateway.create_batch(
        input_file_id=file_id,
        endpoint=shard["url"],
        completion_window=settings.completion_window,
        metadata={"batchline_job_id": job_id, "batchline_shard_id": shard_id},
    )
    store.update_shard(
        job_id, shard_id, status="submitted", batch_id=batch["id"], batch_status=batch["status"], submitted_at=now_iso()
    )
    logger.info("submitted", extra={"batch_id": batch["id"], "requests": shard["requests"]})
    return {"batch_id": batch["id"], "status": batch["status"], "terminal": False}

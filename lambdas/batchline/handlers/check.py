"""Check: read a batch's status and progress, and record them on the shard."""

from __future__ import annotations

from typing import Any

from batchline.adapters.openai_batches import batch_is_terminal
from batchline.handlers.dependencies import job_store, logger, openai_batches


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    shard, batch_id = event["shard"], event["batch"]["batch_id"]
    batch = openai_batches().retrieve_batch(batch_id)
    counts = batch.get("request_counts") or {}
    job_store().update_shard(shard["job_id"], shard["shard_id"], batch_status=batch["status"], request_counts=counts)
    return {"batch_id": batch_id, "status": batch["status"], "terminal": batch_is_terminal(batch)}

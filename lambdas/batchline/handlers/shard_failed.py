"""ShardFailed: record why a shard could not run; Finalize turns its requests into errors."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from batchline.handlers.dependencies import job_store, logger, metered, publish_metric, tracer
from batchline.topology import SHARDS_FAILED_METRIC


@metered("shard_failed", lambda event, result: [event["shard"]["job_id"]])
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    shard, error = event["shard"], event.get("error") or {}
    reason = f"{error.get('Error', 'unknown error')}: {error.get('Cause', '')}".strip()
    if not job_store().fail_shard(shard["job_id"], shard["shard_id"], reason[:2000]):
        # The step that failed had finished its work (its answer was lost): the shard keeps it.
        logger.warning("shard already collected; failure not recorded", extra={"reason": reason[:500]})
        return {"shard_id": shard["shard_id"], "status": "collected"}
    publish_metric(SHARDS_FAILED_METRIC, 1, MetricUnit.Count)
    logger.error("shard failed", extra={"shard_id": shard["shard_id"], "reason": reason[:500]})
    return {"shard_id": shard["shard_id"], "status": "failed"}

"""Enqueue: put one shard's requests on the realtime queue (the realtime route's Map calls it per shard)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from batchline.metering import metered
from batchline.observability import logger, publish_metric, tracer
from batchline.topology import REQUESTS_ENQUEUED_METRIC
from batchline.wiring import enqueueing


@metered("enqueue", lambda event, result: [event["shard"]["job_id"]])
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id, shard_id = event["shard"]["job_id"], event["shard"]["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id)
    sent = enqueueing().enqueue_shard(job_id, shard_id)
    publish_metric(REQUESTS_ENQUEUED_METRIC, sent, MetricUnit.Count)
    logger.info("enqueued", extra={"messages": sent})
    return {"shard_id": shard_id, "enqueued": sent}

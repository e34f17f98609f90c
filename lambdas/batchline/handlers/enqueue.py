"""Enqueue: put one shard's requests on the realtime queue (the realtime route's Map calls it per shard)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.job_store import now_iso
from batchline.handlers.dependencies import job_store, metered
from batchline.observability import logger, publish_metric, tracer
from batchline.topology import REQUESTS_ENQUEUED_METRIC
from batchline.workflow.enqueueing import enqueue_round


@metered("enqueue", lambda event, result: [event["shard"]["job_id"]])
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    shard = event["shard"]
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id)
    sent = enqueue_round(job_id, shard_id, 0)
    store = job_store()
    store.update_shard(job_id, shard_id, status="enqueued", enqueued=sent)
    store.update_job(job_id, realtime_updated_at=now_iso())
    publish_metric(REQUESTS_ENQUEUED_METRIC, sent, MetricUnit.Count)
    logger.info("enqueued", extra={"messages": sent})
    return {"shard_id": shard_id, "enqueued": sent}

"""CheckShards: one poll of a batch job: check every running batch, collect those that ended,
submit the next rounds and the shards that were waiting, and say whether the job is finished.

Finished means every shard ended (collected, failed, cancelled or stopped by the budget) and
every request a round sent to the realtime workers has an outcome.
"""

from __future__ import annotations

from typing import Any

from batchline.handlers.dependencies import environment, metered
from batchline.handlers.submit import advance_job
from batchline.observability import logger, metrics, tracer


@metered("check", lambda event, result: [event["job_id"]])
@metrics.log_metrics
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = environment().settings
    progress = advance_job(event, context, check=True)
    # Each poll adds about nine events to the execution's history, which holds 25,000 at most.
    progress["polls"] = int(event.get("polls") or 0) + 1
    progress["hand_over"] = not progress["finished"] and progress["polls"] >= settings.max_polls_per_execution
    if progress["hand_over"]:
        logger.info("handing the job over to a new execution", extra={"polls": progress["polls"]})
    return progress

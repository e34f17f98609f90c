"""Plan: stream the input file from S3, validate and count it, and cut it into shards."""

from __future__ import annotations

from typing import Any

from batchline.adapters.job_store import now_iso
from batchline.adapters.plan_outputs import S3PlanOutputs
from batchline.domain.errors import InputNotFoundError
from batchline.domain.layout import JobLayout, make_job_id
from batchline.domain.planning import planner_for
from batchline.domain.request_line import iter_physical_lines
from batchline.domain.routing import requested_mode, route_for
from batchline.domain.tokens import ParallelTokenCounter
from batchline.handlers.dependencies import environment, job_store, logger, objects, output_objects

TOKEN_THREADS = 2


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = environment().settings
    bucket, key = event["bucket"], event["key"]
    source = objects(bucket)
    head = source.head(key)
    if head is None:
        raise InputNotFoundError(f"s3://{bucket}/{key} does not exist (deleted after upload, or a wrong key)")
    etag, metadata = head
    mode = requested_mode(key=key, metadata=metadata, default=settings.default_mode)
    job_id = make_job_id(key, etag)
    logger.append_keys(job_id=job_id)
    store = job_store()
    store.put_job(job_id, status="planning", bucket=bucket, key=key, mode=mode, started_at=now_iso())

    outputs = S3PlanOutputs(output_objects(), JobLayout(job_id, settings.output_prefix))
    counter = ParallelTokenCounter(TOKEN_THREADS)
    planner = planner_for(settings, outputs=outputs, token_counter=counter)
    try:
        summary = planner.run(iter_physical_lines(source.chunks(key)))
        outputs.close()
    except BaseException:
        outputs.abort()
        raise
    finally:
        counter.close()

    shards = [plan.as_dict() for plan in summary.shards]
    route = route_for(
        mode, valid_requests=summary.valid, auto_realtime_max_requests=settings.auto_realtime_max_requests
    )
    store.put_shards(job_id, [{**shard, "status": "planned"} for shard in shards])
    store.update_job(
        job_id,
        status="running" if shards else "finalizing",
        route=route,
        input_lines=summary.input_lines,
        valid=summary.valid,
        invalid=summary.invalid,
        shard_count=len(shards),
        prompt_tokens=summary.prompt_tokens,
        estimated_cost_usd=summary.estimated_cost_usd,
        estimated_cost_usd_if_realtime=summary.estimated_cost_usd_if_realtime,
    )
    logger.info(
        "planned",
        extra={"input_lines": summary.input_lines, "invalid": summary.invalid, "shards": len(shards), "route": route},
    )
    return {
        "job_id": job_id,
        "route": route,
        "input_lines": summary.input_lines,
        "valid": summary.valid,
        "invalid": summary.invalid,
        "shard_count": len(shards),
        # Only what each Map iteration needs: the state payload must stay far below 256 KB.
        "shards": [
            {
                "job_id": job_id,
                "shard_id": s["shard_id"],
                "url": s["url"],
                "model": s["model"],
                "requests": s["requests"],
            }
            for s in shards
        ],
    }

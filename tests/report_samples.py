"""A finished job as Finalize sees it (summary, shard records, progress points), for the report's tests.

Both routes, two rounds of one shard, a shard whose batch was never collected, a job cap and a
monthly cap, and hostile text wherever a user or a provider chooses the words.
"""

from __future__ import annotations

from batchline.presentation.figures import Progress

HOSTILE = "<script>window.__pwned = 1</script>"
JOB_ID = "feedback-1k-98a10682c092196b"


def sample_summary() -> dict:
    return {
        "job_id": JOB_ID,
        "status": "completed_with_errors",
        "message": f"1190 of 1203 requests succeeded {HOSTILE}",
        "route": "batch",
        "input_lines": 1203,
        "succeeded": 1190,
        "failed": 10,
        "invalid": 3,
        "shards": 3,
        "input_tokens": 120551,
        "output_tokens": 7782,
        "cost_usd": 0.010766,
        "cost_usd_if_realtime": 0.021532,
        "estimated_cost_usd": 0.012967,
        "estimated_cost_usd_if_realtime": 0.025935,
        "error_codes": {HOSTILE: 2, "shard_not_completed": 8, "not_an_object": 3},
        "budget": {
            "job_cap_usd": 0.02,
            "job_spent_usd": 0.010766,
            "month": "2026-11",
            "monthly_cap_usd": 0.05,
            "monthly_spent_usd": 0.031,
            "fallback_model_used": f"gpt-4o -> {HOSTILE}",
            "paused": None,
        },
        "recovery": {"resumes": 1, "batches_resubmitted": 2, "stuck_batches": 1},
        "aws": {
            "cost_usd": 0.00107698,
            "by_service_usd": {
                "lambda": 0.0001205,
                "step_functions": 0.00085,
                "sqs": 0.0,
                "dynamodb": 0.00002588,
                "s3": 0.0000806,
                "secrets_manager": 0.0,
            },
            "usage": {"lambda_gb_seconds": 7.086, "lambda_requests": 12},
            "share_of_llm_cost": 0.100036,
        },
        "outputs": {"summary": f"s3://batchline-output/jobs/{JOB_ID}/summary.json"},
        "started_at": "2026-11-23T07:00:00.000+00:00",
        "finished_at": "2026-11-23T08:00:00.000+00:00",
    }


def sample_shards() -> list[dict]:
    return [
        {
            "shard_id": "00000",
            "model": "gpt-4o-mini",
            "requests": 730,
            "prompt_tokens": 83571,
            "max_output_tokens": 5840,
            "input_tokens": 83000,
            "output_tokens": 5000,
            "status": "collected",
            "rounds_collected": 1,
            "collected_batch_id": "batch_a0",
            "submitted_at": "2026-11-23T07:01:00.000+00:00",
            "collected_at": "2026-11-23T07:21:00.000+00:00",
            "batch_status": "completed",
        },
        {
            "shard_id": "00001",
            "model": HOSTILE,
            "requests": 354,
            "prompt_tokens": 27595,
            "max_output_tokens": 9280,
            "input_tokens": 27000,
            "output_tokens": 2000,
            "status": "realtime",
            "round": 2,
            "rounds_collected": 2,
            "collected_batch_id": "batch_b1",
            "submitted_at": "2026-11-23T07:30:00.000+00:00",
            "collected_at": "2026-11-23T07:40:00.000+00:00",
            "batch_status": "completed",
        },
        {
            "shard_id": "00002",
            "model": "text-embedding-3-small",
            "requests": 116,
            "prompt_tokens": 9385,
            "max_output_tokens": 0,
            "status": "failed",
            "round": 0,
            "batch_id": f"batch_{HOSTILE}",
            "batch_status": "in_progress",
            "submitted_at": "2026-11-23T07:02:00.000+00:00",
        },
    ]


def sample_progress() -> list[Progress]:
    return [
        Progress(
            at="2026-11-23T07:21:00.000+00:00",
            route="batch",
            done=730,
            shard_id="00000",
            round=0,
            batch_id="batch_a0",
            submitted_at="2026-11-23T07:01:00.000+00:00",
            requests=730,
            batch_status="completed",
        ),
        Progress(
            at="2026-11-23T07:25:00.000+00:00",
            route="batch",
            done=300,
            shard_id="00001",
            round=0,
            batch_id="batch_b0",
            submitted_at="2026-11-23T07:02:00.000+00:00",
            requests=354,
            batch_status="completed",
        ),
        Progress(
            at="2026-11-23T07:40:00.000+00:00",
            route="batch",
            done=46,
            shard_id="00001",
            round=1,
            batch_id="batch_b1",
            submitted_at="2026-11-23T07:30:00.000+00:00",
            requests=54,
            batch_status="completed",
        ),
        *(Progress(at=f"2026-11-23T07:41:{second:02d}+00:00", route="realtime", done=2) for second in range(4)),
    ]

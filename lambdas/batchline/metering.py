"""What an invocation uses in AWS (requests, Lambda time, state transitions), added to its jobs for
the run's AWS cost: the `metered` decorator every handler wears outermost."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from batchline.adapters.aws_meter import metering, waited_so_far
from batchline.domain.run_cost import AwsUsage
from batchline.observability import logger
from batchline.topology import state_transitions
from batchline.wiring import environment, job_store
from batchline.workflow.realtime_messages import jobs_of

# Messages Lambda's SQS event source receives, or deletes, in one request.
_SQS_MESSAGES_PER_CALL = 10


def worker_jobs(event: dict[str, Any], result: Any) -> list[str]:
    """The jobs whose messages a worker's invocation served: its usage is shared among them."""
    return jobs_of(event.get("Records", []))


def event_source_requests(event: dict[str, Any]) -> int:
    """The SQS requests Lambda's event source made for this batch: receives and deletes, ten at a time."""
    return 2 * math.ceil(len(event.get("Records", [])) / _SQS_MESSAGES_PER_CALL)


# A local run's allowance for the latency of one in-region AWS request, which it does not see.
LOCAL_REQUEST_LATENCY_MS = 20


def metered(
    function: str,
    job_ids: Callable[[dict, Any], Iterable[str]],
    *,
    sqs_requests: Callable[[dict], int] | None = None,
) -> Callable:
    """Count what an invocation uses in AWS and add it to its job(s), for the run's AWS cost.

    `job_ids(event, result)` names the jobs served (result is None when the handler raised); an
    invocation serving several (a worker's batch of messages) splits its usage among them.
    `sqs_requests(event)` counts the SQS requests made on the function's behalf (an event source's
    receives and deletes). Put it outermost, so that the Powertools decorators' own requests are
    counted too.
    """

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def run(event: dict, context: Any) -> Any:
            cpu_clock = environment().meter_clock == "cpu"
            clock = time.thread_time if cpu_clock else time.monotonic
            started = clock()
            result = None
            with metering() as usage:
                try:
                    result = handler(event, context)
                    return result
                finally:
                    usage.lambda_requests += 1
                    usage.state_transitions += state_transitions(function, result)
                    if sqs_requests is not None:
                        usage.sqs_requests += sqs_requests(event)
                    memory_mb = int(getattr(context, "memory_limit_in_mb", 0) or 0)
                    elapsed_ms = (clock() - started) * 1000
                    if cpu_clock:
                        # Its own CPU, the AWS requests' latency, and the time it waited on the provider.
                        elapsed_ms += LOCAL_REQUEST_LATENCY_MS * usage.requests() + waited_so_far() * 1000
                    usage.lambda_ms_mb += round(elapsed_ms) * memory_mb
                    _record_usage(usage, event, result, job_ids)

        return run

    return decorate


def _record_usage(usage: AwsUsage, event: dict, result: Any, job_ids: Callable[[dict, Any], Iterable[str]]) -> None:
    try:
        jobs = sorted(set(job_ids(event, result)))
    except (KeyError, TypeError, ValueError):
        jobs = []
    usage.dynamodb_write_units += len(jobs)  # the updates below
    for job_id, share in zip(jobs, usage.split(len(jobs)) if jobs else [], strict=True):
        try:
            job_store().add_to_job(job_id, **share.as_counters())
        except Exception:  # noqa: BLE001 (the cost figures must never fail the work they describe)
            logger.warning("could not record the invocation's AWS usage", extra={"job_id": job_id})

"""Send a shard's current round to OpenAI as a batch, once, within budget and queue limits.

Answers what the shard waits for next:
- ``wait_batch``: a batch runs (created now, or by an earlier attempt and found again);
- ``wait_admission``: the model's enqueued-token queue has no room yet, try again after a wait;
- ``done``: nothing left to send (collected earlier, the budget stopped the shard, or the user
  cancelled the job: the shard ends "cancelled" and its unsent round is reported by Finalize).

Each step is recorded before it acts on the outside world and after, and everything it does is
safe to repeat: the budget and the queue are reserved with tickets, the file id is recorded, and a
batch is looked for by its metadata before one is created.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.job_store import now_iso
from batchline.composition import price_book
from batchline.domain.budget import Stance, month_of, stop_message, to_nano
from batchline.domain.errors import ShardStateError
from batchline.domain.layout import JobLayout
from batchline.domain.shard_lines import canonical_line
from batchline.domain.statuses import ShardStatus
from batchline.handlers.dependencies import (
    admission_ledger,
    budget_policy,
    budgets,
    environment,
    job_store,
    openai_batches,
    output_objects,
)
from batchline.observability import logger, metrics
from batchline.topology import BATCHES_SUBMITTED_METRIC, BUDGET_FALLBACK_METRIC, BUDGET_STOP_METRIC
from batchline.workflow.enqueueing import enqueue_round

# How long a claim to create a shard's batch holds: longer than any Submit can run.
_CLAIM_SECONDS = 1800


def ticket_for(job_id: str, shard_id: str, round_number: int) -> str:
    """Names the budget reservation and the queue admission of one round of one shard."""
    return f"{job_id}#{shard_id}#r{round_number}"


def batch_metadata(job_id: str, shard_id: str, round_number: int) -> dict[str, str]:
    return {"batchline_job_id": job_id, "batchline_shard_id": shard_id, "batchline_round": str(round_number)}


def round_figures(record: dict) -> tuple[int, int, float]:
    """(requests, prompt tokens, share of the shard) of the shard's current round."""
    requests = int(record.get("round_requests", record["requests"]))
    share = requests / max(1, int(record["requests"]))
    prompt_tokens = int(record.get("round_prompt_tokens", record["prompt_tokens"]))
    return requests, prompt_tokens, share


def _round_estimate_nano(record: dict, model: str) -> int:
    """The round's worst case at batch price for the model it will run on."""
    _, prompt_tokens, share = round_figures(record)
    prices = price_book(environment().settings)
    return to_nano(prices.batch_cost(model, prompt_tokens, round(int(record["max_output_tokens"]) * share)))


def _stop(job_id: str, shard_id: str, reason: str) -> dict[str, Any]:
    store = job_store()
    store.update_shard(job_id, shard_id, status=ShardStatus.BUDGET_STOPPED, stop_reason=reason, remove=("round_model",))
    store.update_job(job_id, budget_paused=reason)
    metrics.add_metric(name=BUDGET_STOP_METRIC, unit=MetricUnit.Count, value=1)
    logger.warning("budget stop", extra={"reason": reason})
    return {"action": "done", "stopped": True}


def _choose_model(job: dict, record: dict) -> tuple[str | None, str | None]:
    """(model, stop reason): the model this round runs on, decided once per round; None when stopped."""
    if record.get("round_model"):
        return record["round_model"], None
    job_scope, month_scope = budgets().usage(job["job_id"], job["budget_month"])
    policy = budget_policy()
    stance = policy.stance(job_scope, month_scope)
    if stance is Stance.STOP:
        return None, stop_message((job_scope, month_scope), policy.stop_threshold)
    model = policy.model_for(record["model"], stance)
    if model != record["model"]:
        job_store().update_job(job["job_id"], fallback_model_used=f"{record['model']} -> {model}")
        metrics.add_metric(name=BUDGET_FALLBACK_METRIC, unit=MetricUnit.Count, value=1)
        logger.warning("budget fallback", extra={"from": record["model"], "to": model})
    return model, None


def _upload(job_id: str, shard_id: str, round_number: int, model: str, original_model: str) -> str:
    """Upload the round's file; rewritten for the fallback model when the round runs on one."""
    layout = JobLayout(job_id, environment().settings.output_prefix)
    storage = output_objects()
    key = layout.round_requests(shard_id, round_number)
    if model != original_model:
        fallback_key = layout.round_upload(shard_id, round_number, model)
        with storage.writer(fallback_key) as writer:
            for raw in storage.lines(key):
                if raw:
                    request = orjson.loads(raw)
                    request["body"]["model"] = model
                    writer.write(canonical_line(orjson.dumps(request)) + b"\n")  # orjson writes U+2028 raw
        key = fallback_key
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"{job_id}-{shard_id}-r{round_number}.jsonl"
        storage.download(key, str(path))
        return openai_batches().upload_batch_file(path)


def _cancelled(job_id: str, shard_id: str, record: dict, job: dict, attempt: str) -> dict[str, Any]:
    """The user cancelled the job: send nothing new. Finalize reports the round's requests as cancelled.

    Under the shard's submission claim, so that no other attempt creates a batch meanwhile; an
    attempt holding it may be creating one right now, and is waited for like any claim holder.
    The round may hold a budget reservation and room in the enqueued-token ledger (a batch refused
    for the token limit keeps its reservation); both are given back, once.
    """
    store = job_store()
    claim = f"{attempt}-{uuid.uuid4()}"
    stale = (datetime.now(UTC) - timedelta(seconds=_CLAIM_SECONDS)).isoformat(timespec="milliseconds")
    if not store.claim_submission(job_id, shard_id, claim, stale_before=stale):
        return {"action": "wait_admission"}  # back here after a wait: its batch is then found and waited for
    ticket = ticket_for(job_id, shard_id, int(record.get("round", 0)))
    budgets().settle(job_id, job.get("budget_month") or month_of(), ticket, 0)
    admission_ledger().release(record.get("round_model") or record["model"], ticket)
    store.update_shard(job_id, shard_id, status=ShardStatus.CANCELLED, remove=("round_model", "submit_claim"))
    logger.info("not submitted: the job was cancelled", extra={"cancel_requested": job["cancel_requested"]})
    return {"action": "done", "stopped": False}


def submit_round(shard: dict[str, Any], attempt: str) -> dict[str, Any]:
    """Submit the shard's current round unless it runs already; `attempt` names the caller in claims.

    `shard` needs job_id, shard_id and url. The answer's action is wait_batch (with batch_id),
    wait_admission or done.
    """
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id)
    settings = environment().settings
    store = job_store()
    record = store.get_shard(job_id, shard_id)
    if record is None:
        raise ShardStateError(f"shard {shard_id} of job {job_id} has no record; was the job planned?")
    if record.get("status") == ShardStatus.COLLECTED:
        return {"action": "done", "stopped": False}
    if record.get("status") in (ShardStatus.REALTIME, ShardStatus.REALTIME_REQUEUE):
        # Its last requests went to the realtime path; queue again any that may have been lost
        # (a worker skips a request that already has an outcome).
        enqueue_round(job_id, shard_id, int(record.get("round", 0)))
        store.update_shard(job_id, shard_id, status=ShardStatus.REALTIME)
        return {"action": "done", "stopped": False}
    round_number = int(record.get("round", 0))
    logger.append_keys(round=round_number)
    if record.get("batch_id"):
        return {"action": "wait_batch", "batch_id": record["batch_id"]}

    gateway = openai_batches()
    metadata = batch_metadata(job_id, shard_id, round_number)
    found = gateway.find_batch(metadata)
    if found is not None:
        # Created by an attempt that stopped before recording it: adopt it, never pay twice.
        store.update_shard(
            job_id, shard_id, status=ShardStatus.SUBMITTED, batch_id=found["id"], batch_status=found["status"]
        )
        logger.warning("adopted a batch created by an earlier attempt", extra={"batch_id": found["id"]})
        return {"action": "wait_batch", "batch_id": found["id"]}

    job = store.get_job(job_id) or {}
    if job.get("cancel_requested"):
        return _cancelled(job_id, shard_id, record, job, attempt)
    job.setdefault("budget_month", month_of())
    model, stop_reason = _choose_model(job, record)
    if model is None:
        return _stop(job_id, shard_id, stop_reason or "budget")
    store.update_shard(job_id, shard_id, round_model=model)
    ticket = ticket_for(job_id, shard_id, round_number)
    if not budgets().take(job_id, job["budget_month"], _round_estimate_nano(record, model), piece=ticket):
        return _stop(job_id, shard_id, "not sent: no room left in the job's or the month's budget for this batch")

    _, prompt_tokens, _ = round_figures(record)
    limit = settings.batch_queue.limit_for(model)
    if prompt_tokens > limit:
        raise ShardStateError(
            f"shard {shard_id} holds {prompt_tokens:,} prompt tokens, more than the whole enqueued-token limit "
            f"of {model} ({limit:,}); planning cuts shards to fit, so the settings changed since it was planned"
        )
    if not admission_ledger().admit(model, ticket, prompt_tokens, limit):
        store.update_shard(job_id, shard_id, status=ShardStatus.WAITING_ADMISSION)
        logger.info("waiting for room in the enqueued-token limit", extra={"model": model, "tokens": prompt_tokens})
        return {"action": "wait_admission"}

    claim = f"{attempt}-{uuid.uuid4()}"
    stale = (datetime.now(UTC) - timedelta(seconds=_CLAIM_SECONDS)).isoformat(timespec="milliseconds")
    if not store.claim_submission(job_id, shard_id, claim, stale_before=stale):
        logger.warning("another attempt is submitting this shard; waiting for it")
        return {"action": "wait_admission"}  # back here after a wait, to find its batch
    file_id = record.get("input_file_id")
    if not file_id:
        file_id = _upload(job_id, shard_id, round_number, model, record["model"])
        store.update_shard(job_id, shard_id, input_file_id=file_id, status=ShardStatus.UPLOADED)
    store.update_shard(job_id, shard_id, status=ShardStatus.SUBMITTING, submitting_at=now_iso())
    batch = gateway.create_batch(
        input_file_id=file_id, endpoint=shard["url"], completion_window=settings.completion_window, metadata=metadata
    )
    store.update_shard(
        job_id,
        shard_id,
        status=ShardStatus.SUBMITTED,
        batch_id=batch["id"],
        batch_status=batch["status"],
        submitted_at=now_iso(),
    )
    metrics.add_metric(name=BATCHES_SUBMITTED_METRIC, unit=MetricUnit.Count, value=1)
    logger.info("submitted", extra={"batch_id": batch["id"], "model": model, "prompt_tokens": prompt_tokens})
    return {"action": "wait_batch", "batch_id": batch["id"]}

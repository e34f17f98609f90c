"""Put one round of a shard on the realtime queue, one message per request.

Each message carries what a worker needs to call at the shared limit without re-reading the
input: the line, the custom_id, the endpoint, the model, the token cost (prompt tokens counted
exactly plus the output cap) and the request body, or an S3 key when the body is too big for SQS.
Used by the realtime route (every shard) and by the batch route (the last few requests of a round).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import orjson

from batchline.composition import validator_for
from batchline.domain.layout import JobLayout
from batchline.domain.planning import decode_manifest_entry
from batchline.domain.request_line import ValidRequest
from batchline.handlers.dependencies import environment, job_store, output_objects, request_queue

# Lines looked up at once for an earlier answer (one BatchGetItem reads 100 blocks of 128 lines).
_LOOKUP_LINES = 12_800


def _messages(job_id: str, shard_id: str, raws: Iterator[bytes], manifest: Iterator[bytes]) -> Iterator[dict]:
    validator = validator_for(environment().settings)
    pairs = zip(raws, manifest, strict=True)
    while entries := [(raw, *decode_manifest_entry(entry)) for raw, entry in islice(pairs, _LOOKUP_LINES)]:
        # A resumed job: lines answered before are never sent again.
        answered = job_store().answered_lines(job_id, (line for _, line, _ in entries))
        for raw, line, custom_id in entries:
            if line in answered:
                continue
            request = validator.validate(line, raw)
            if not isinstance(request, ValidRequest):  # planned lines are valid; anything else is a bug
                raise ValueError(f"line {line} of shard {shard_id} no longer validates: {request.message}")
            yield {
                "job_id": job_id,
                "shard_id": shard_id,
                "line": line,
                "custom_id": custom_id,
                "url": request.url,
                "model": request.model,
                "token_cost": request.count_prompt_tokens() + request.max_output_tokens,
                "body": orjson.loads(raw)["body"],
            }


def enqueue_round(job_id: str, shard_id: str, round_number: int) -> int:
    """Queue every request of one round of a shard for the realtime workers; the number sent."""
    layout = JobLayout(job_id, environment().settings.output_prefix)
    storage = output_objects()

    def spill(message: dict) -> dict:
        key = layout.realtime_body(message["line"])
        storage.put(key, orjson.dumps(message["body"]), "application/json")
        return {**{k: v for k, v in message.items() if k != "body"}, "body_key": key}

    raws = (raw for raw in storage.lines(layout.round_requests(shard_id, round_number)) if raw)
    manifest = (entry for entry in storage.lines(layout.round_manifest(shard_id, round_number)) if entry)
    return request_queue().send_all(_messages(job_id, shard_id, raws, manifest), spill=spill)

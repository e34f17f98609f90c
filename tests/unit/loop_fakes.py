"""In-memory fakes of the batch poll loop's ports, and a Batch API that runs on a clock the test moves.

Nothing here talks to AWS or a provider: a whole job, with its expiries, failures and cancels, runs
through the real use cases (workflow/shard_loop.py and the steps it calls) in milliseconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
from batchline.composition import price_book
from batchline.domain.budget import BudgetPolicy, ScopeUsage
from batchline.domain.errors import ProviderError
from batchline.domain.layout import JobLayout
from batchline.domain.planning import encode_manifest_entry
from batchline.domain.records import JobRecord, ShardRecord, plain
from batchline.settings import load_settings
from batchline.workflow.loop_context import LoopContext, LoopSettings
from batchline.workflow.shard_loop import ShardLoop

PREFIX = "jobs"
CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"


class FakeClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class MemoryObjects:
    """A bucket (the output one, or the input one with its objects' metadata), in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.metadata: dict[str, dict[str, str]] = {}

    def lines(self, key: str) -> Iterator[bytes]:
        yield from self.objects.get(key, b"").splitlines()

    def exists(self, key: str) -> bool:
        return key in self.objects

    def chunks(self, key: str) -> Iterator[bytes]:
        yield self.objects[key]

    def head(self, key: str) -> tuple[str, dict[str, str]] | None:
        return ("etag", self.metadata.get(key, {})) if key in self.objects else None

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[Any]:
        parts: list[bytes] = []

        class _Writer:
            def write(self, data: bytes) -> None:
                parts.append(data)

        yield _Writer()
        self.objects[key] = b"".join(parts)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[key] = data

    def download(self, key: str, path: str) -> None:
        Path(path).write_bytes(self.objects[key])

    def jsonl(self, key: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines(key)]


class MemoryJobTable:
    """The job table's job and shard records, with the store's conditional updates."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.shards: dict[str, dict[str, dict[str, Any]]] = {}
        self.answered: dict[str, set[int]] = {}
        self.progress_points: list[dict[str, Any]] = []

    # jobs
    def get_job(self, job_id: str) -> JobRecord | None:
        return msgspec.convert(self.jobs[job_id], JobRecord) if job_id in self.jobs else None

    def update_job(self, job_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        job = self.jobs.setdefault(job_id, {"job_id": job_id})
        job.update(fields)
        for name in remove:
            job.pop(name, None)

    def add_to_job(self, job_id: str, **additions: int) -> None:
        job = self.jobs.setdefault(job_id, {"job_id": job_id})
        for name, value in additions.items():
            job[name] = job.get(name, 0) + value

    def progress(self, job_id: str) -> list[dict[str, Any]]:
        return [point for point in self.progress_points if point["job_id"] == job_id]

    def record_progress(self, job_id: str, key: str, *, at: str, route: str, done: int, **details: Any) -> bool:
        self.progress_points.append({"job_id": job_id, "key": key, "at": at, "route": route, "done": done, **details})
        return True

    def answered_lines(self, job_id: str, lines: Iterable[int]) -> set[int]:
        return set(lines) & self.answered.get(job_id, set())

    # shards
    def put_shards(self, job_id: str, shards: list[ShardRecord]) -> None:
        self.shards.setdefault(job_id, {}).update({shard.shard_id: plain(shard) for shard in shards})

    def get_shard(self, job_id: str, shard_id: str) -> ShardRecord | None:
        item = self.shards.get(job_id, {}).get(shard_id)
        return msgspec.convert(item, ShardRecord) if item is not None else None

    def list_shards(self, job_id: str) -> list[ShardRecord]:
        return [msgspec.convert(item, ShardRecord) for item in self.shards.get(job_id, {}).values()]

    def update_shard(self, job_id: str, shard_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        item = self.shards[job_id][shard_id]
        item.update(fields)
        for name in remove:
            item.pop(name, None)  # read back at the record's default

    def claim_submission(self, job_id: str, shard_id: str, token: str, *, stale_before: str) -> bool:
        item = self.shards[job_id][shard_id]
        if item.get("batch_id") or item.get("submit_claim") not in (None, token):
            return False
        item["submit_claim"] = token
        return True

    def fail_shard(self, job_id: str, shard_id: str, reason: str) -> bool:
        item = self.shards[job_id][shard_id]
        if item["status"] == "collected":
            return False
        item.update(status="failed", failure=reason)
        return True

    def count_shard_error(self, job_id: str, shard_id: str) -> int:
        item = self.shards[job_id][shard_id]
        item["step_errors"] = item.get("step_errors", 0) + 1
        return int(item["step_errors"])

    def collect_round(
        self,
        job_id: str,
        shard_id: str,
        *,
        batch_id: str,
        additions: dict[str, int],
        fields: dict[str, Any],
        removals: tuple[str, ...],
    ) -> bool:
        item = self.shards[job_id][shard_id]
        if item.get("collected_batch_id") == batch_id:
            return False
        for name, value in additions.items():
            item[name] = item.get(name, 0) + value
        self.update_shard(job_id, shard_id, remove=removals, **fields, collected_batch_id=batch_id)
        return True


@dataclass
class FakeBatch:
    """One batch at the fake provider: its requests, and how it will go."""

    id: str
    requests: list[dict[str, Any]]
    created_at: float
    plan: str  # complete | expire | fail_some | stay_validating
    status: str = "validating"
    done_at: float = 0.0
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    answered: list[str] = field(default_factory=list)


class FakeBatchApi:
    """A Batch API on the test's clock. Each batch validates for a minute, then runs for an hour and
    ends as its plan says: `complete`; `expire` (after 24 hours, having answered the first half);
    `fail_some` (the custom_ids in `failing` answer 500, those in `refusing` 400, the rest 200);
    `stay_validating` (never leaves validating). `plans` are taken one per batch created.

    A request asking for a JSON Schema (`structured_request`) gets JSON that follows it, but the next
    `off_schema[custom_id]` answers to that custom_id leave out its required `label`."""

    def __init__(self, clock: FakeClock, plans: Iterable[str] = ()) -> None:
        self.clock = clock
        self.plans = list(plans)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.failing: set[str] = set()
        self.refusing: set[str] = set()
        self.transient_failures: dict[str, int] = {}  # batch id -> its next retrieves that raise a transient error
        self.off_schema: dict[str, int] = {}  # custom_id -> its next answers that fail their schema

    def sent(self) -> list[list[str]]:
        """The custom_ids of each batch created, in order: what was paid for."""
        return [[request["custom_id"] for request in batch.requests] for batch in self.batches.values()]

    def upload_batch_file(self, path: Path) -> str:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = path.read_bytes()
        return file_id

    def create_batch(
        self, *, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str]
    ) -> dict[str, Any]:
        requests = [orjson.loads(line) for line in self.files[input_file_id].splitlines() if line]
        batch_id = f"batch-{len(self.batches) + 1}"
        plan = self.plans.pop(0) if self.plans else "complete"
        self.batches[batch_id] = FakeBatch(batch_id, requests, self.clock.now().timestamp(), plan, metadata=metadata)
        return self.retrieve_batch(batch_id)

    def find_batch(self, metadata: dict[str, str]) -> dict[str, Any] | None:
        for batch in self.batches.values():
            if batch.metadata == metadata:
                return self.retrieve_batch(batch.id)
        return None

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            raise ProviderError(f"batch {batch_id} has ended already")
        self._end(batch, "cancelled", answered=batch.requests[: len(batch.requests) // 2])
        return self.retrieve_batch(batch_id)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        from batchline.domain.errors import TransientProviderError

        if self.transient_failures.get(batch_id):
            self.transient_failures[batch_id] -= 1
            raise TransientProviderError("503 from the provider")
        batch = self.batches[batch_id]
        now = self.clock.now().timestamp()
        age = now - batch.created_at
        if batch.status in ("validating", "in_progress") and batch.plan != "stay_validating":
            if batch.plan == "expire" and age >= 24 * 3600:
                self._end(batch, "expired", answered=batch.requests[: len(batch.requests) // 2])
            elif batch.plan != "expire" and age >= 3660:
                self._end(batch, "completed", answered=batch.requests)
            elif age >= 60:
                batch.status = "in_progress"
        view: dict[str, Any] = {
            "id": batch.id,
            "status": batch.status,
            "created_at": int(batch.created_at),
            "in_progress_at": int(batch.created_at) + 60,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "request_counts": {"total": len(batch.requests), "completed": len(batch.answered), "failed": 0},
            "metadata": batch.metadata,
        }
        return view

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        yield from self.files[file_id].splitlines()

    def _end(self, batch: FakeBatch, status: str, *, answered: list[dict[str, Any]]) -> None:
        outputs, errors = [], []
        for request in answered:
            custom_id = request["custom_id"]
            code = 500 if custom_id in self.failing else 400 if custom_id in self.refusing else 200
            body = (
                {"choices": [{"message": {"content": self._content(request)}}], "usage": _USAGE}
                if code == 200
                else {"error": {"message": f"status {code}", "type": "server_error" if code == 500 else "invalid"}}
            )
            line = orjson.dumps({"custom_id": custom_id, "response": {"status_code": code, "body": body}})
            (outputs if code == 200 else errors).append(line)
            batch.answered.append(custom_id)
        batch.output_file_id = self._file(outputs)
        batch.error_file_id = self._file(errors)
        batch.status = status

    def _content(self, request: dict[str, Any]) -> str:
        custom_id = request["custom_id"]
        if "response_format" not in request["body"]:
            return f"answer to {custom_id}"
        if self.off_schema.get(custom_id, 0) > 0:
            self.off_schema[custom_id] -= 1
            return orjson.dumps({"score": 1}).decode()
        return orjson.dumps({"label": f"label of {custom_id}", "score": 1}).decode()

    def _file(self, lines: list[bytes]) -> str | None:
        if not lines:
            return None
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = b"\n".join(lines) + b"\n"
        return file_id


_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class MemoryAdmission:
    def __init__(self) -> None:
        self.tickets: dict[str, int] = {}

    def admit(self, model: str, ticket: str, tokens: int, limit: int) -> bool:
        if ticket not in self.tickets and sum(self.tickets.values()) + tokens > limit:
            return False
        self.tickets[ticket] = tokens
        return True

    def release(self, model: str, ticket: str) -> bool:
        return self.tickets.pop(ticket, None) is not None


class MemoryReservations:
    """The budget counters: a reservation per ticket, settled once with what the round cost."""

    def __init__(self, *, cap_nano: int | None = None) -> None:
        self.cap_nano = cap_nano
        self.reserved: dict[str, int] = {}
        self.settled: dict[str, int] = {}

    def usage(self, job_id: str, month: str) -> tuple[ScopeUsage, ScopeUsage]:
        committed = sum(self.reserved.values()) + sum(self.settled.values())
        return ScopeUsage("job", self.cap_nano, committed), ScopeUsage("month", None, committed)

    def take(self, job_id: str, month: str, estimate_nano: int, *, piece: str | None = None) -> bool:
        if self.cap_nano is not None and self.usage(job_id, month)[0].committed_nano + estimate_nano > self.cap_nano:
            return False
        self.reserved[piece or job_id] = estimate_nano
        return True

    def settle(self, job_id: str, month: str, piece: str, actual_nano: int) -> bool:
        if piece in self.settled:
            return False
        self.reserved.pop(piece, None)
        self.settled[piece] = actual_nano
        return True


class MemoryQueue:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send_all(self, messages: Iterable[dict[str, Any]], *, spill: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
        sent = list(messages)
        self.messages += sent
        return len(sent)


class MemorySpool:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []

    def add(self, line: int, record: dict[str, Any]) -> None:
        self.records.append((line, orjson.dumps(record) + b"\n"))

    def in_line_order(self) -> Iterator[bytes]:
        for _, raw in sorted(self.records, key=lambda item: item[0]):
            yield raw

    def close(self) -> None:
        pass


class RecordedMetrics:
    def __init__(self) -> None:
        self.counted: list[str] = []
        self.published: list[tuple[str, float]] = []

    def count(self, name: str, value: float = 1) -> None:
        self.counted.append(name)

    def publish(self, name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
        self.published.append((name, value))


@dataclass
class LoopWorld:
    """One job's world: the fakes, the use case over them, and helpers to stage and run it."""

    clock: FakeClock
    jobs: MemoryJobTable
    storage: MemoryObjects
    batches: FakeBatchApi
    admission: MemoryAdmission
    budgets: MemoryReservations
    queue: MemoryQueue
    metrics: RecordedMetrics
    loop: ShardLoop

    def stage_shard(self, job_id: str, shard_id: str, lines: list[int], *, structured: bool = False) -> None:
        """A planned shard of `lines` (one chat request each, asking for LABEL_SCHEMA if `structured`),
        as Plan leaves it."""
        layout = JobLayout(job_id, PREFIX)
        self.jobs.update_job(job_id, route="batch", planned=True, budget_month="2026-12", valid=len(lines))
        self.jobs.put_shards(
            job_id,
            [
                ShardRecord(
                    job_id=job_id,
                    shard_id=shard_id,
                    url=CHAT,
                    model=MODEL,
                    requests=len(lines),
                    prompt_tokens=10 * len(lines),
                    max_output_tokens=5 * len(lines),
                )
            ],
        )
        make = structured_request if structured else chat_request
        requests = b"".join(orjson.dumps(make(line)) + b"\n" for line in lines)
        self.storage.put(layout.round_requests(shard_id, 0), requests)
        self.storage.put(
            layout.round_manifest(shard_id, 0), b"".join(encode_manifest_entry(line, f"c{line}") for line in lines)
        )

    def run(self, job_id: str, *, max_polls: int = 50) -> list[dict[str, Any]]:
        """SubmitShards, then CheckShards after each wait (the clock moves by it) until finished."""
        answers = [self.loop.first_pass(job_id, poll_floor=None, attempt="a1", seconds_left=lambda: 900.0)]
        for poll in range(max_polls):
            self.clock.advance(max(answers[-1]["wait_seconds"], 1))
            answers.append(
                self.loop.poll(job_id, polls=poll, poll_floor=None, attempt=f"a{poll + 2}", seconds_left=lambda: 900.0)
            )
            if answers[-1]["finished"]:
                return answers
        raise AssertionError(f"not finished after {max_polls} polls: {answers[-1]}")

    def shard(self, job_id: str, shard_id: str) -> ShardRecord:
        record = self.jobs.get_shard(job_id, shard_id)
        assert record is not None
        return record


def chat_request(line: int) -> dict[str, Any]:
    return {
        "custom_id": f"c{line}",
        "method": "POST",
        "url": CHAT,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": f"line {line}"}], "max_tokens": 5},
    }


LABEL_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}


def structured_request(line: int) -> dict[str, Any]:
    request = chat_request(line)
    request["body"]["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "label", "strict": True, "schema": LABEL_SCHEMA},
    }
    return request


def loop_world(*, plans: Iterable[str] = (), budget_cap_nano: int | None = None, **overrides: Any) -> LoopWorld:
    settings = load_settings({})
    clock = FakeClock()
    world_settings = {
        "output_prefix": PREFIX,
        "completion_window": "24h",
        "poll_seconds": 60,
        "max_poll_seconds": 3600,
        "max_polls_per_execution": 1000,
        "batches_in_flight": 10,
        "step_attempts": 3,
        "max_attempts": 3,
        "realtime_below_requests": 0,
        "stuck_after_seconds": 2 * 3600,
        "realtime_stall_seconds": 600,
        "queue_limit": lambda model: 1_000_000,
        **overrides,
    }
    jobs, storage, batches = MemoryJobTable(), MemoryObjects(), FakeBatchApi(clock, plans)
    admission, budgets, queue = MemoryAdmission(), MemoryReservations(cap_nano=budget_cap_nano), MemoryQueue()
    metrics = RecordedMetrics()
    context = LoopContext(
        jobs=jobs,
        storage=storage,
        provider=lambda: batches,
        admission=admission,
        budgets=budgets,
        budget_policy=BudgetPolicy(fallback_threshold=0.8, stop_threshold=1.0, fallback_models={}),
        prices=price_book(settings),
        validator=lambda: _unused("validator"),
        queue=lambda: queue,
        spool=MemorySpool,
        metrics=metrics,
        clock=clock,
        settings=LoopSettings(**world_settings),
    )
    return LoopWorld(clock, jobs, storage, batches, admission, budgets, queue, metrics, ShardLoop(context))


def _unused(port: str) -> Any:
    raise AssertionError(f"the batch route used the {port} port")

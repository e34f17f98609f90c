"""What the use cases need of the outside world, as small Protocols.

A use case is handed an implementation of each port it uses (the adapters in AWS and in the local
run, in-memory fakes in the unit tests) and never builds or imports one itself, so that its logic
can be read, and tested, without S3, DynamoDB or a provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from batchline.domain.budget import ScopeUsage
from batchline.domain.layout import JobLayout
from batchline.domain.records import JobRecord, ShardRecord


class LineSource(Protocol):
    """Objects read line by line (JSON Lines, manifests)."""

    def lines(self, key: str) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...


class Writable(Protocol):
    def write(self, data: bytes) -> None: ...


class ObjectStore(LineSource, Protocol):
    """The output bucket: read line by line, written as a stream or at once."""

    def writer(self, key: str) -> AbstractContextManager[Writable]: ...

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...


class JobRecords(Protocol):
    """The job table's items of one job: the job, its shards, the points of its progress."""

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def list_shards(self, job_id: str) -> list[ShardRecord]: ...

    def progress(self, job_id: str) -> Iterable[dict[str, Any]]: ...

    def update_job(self, job_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None: ...


class OutcomeRecords(Protocol):
    """The realtime workers' outcome records of a job, as written (one JSON object per line)."""

    def records(self, job_id: str) -> Iterable[bytes]: ...


class OutcomeOrdering(Protocol):
    """Outcome records put in line order, however many (an index on disk); used once, as a context."""

    def __enter__(self) -> OutcomeOrdering: ...

    def __exit__(self, *exc: object) -> None: ...

    def add_all(self, raws: Iterable[bytes]) -> None: ...

    def in_line_order(self) -> Iterator[tuple[int, bool, str | None, bytes]]: ...


class BudgetAccounts(Protocol):
    """The budget counters as Finalize reads and settles them."""

    @property
    def month_cap_nano(self) -> int | None: ...

    def month_spent_nano(self, month: str) -> int: ...

    def release_hold(self, job_id: str, month: str) -> int: ...


# The batch poll loop's ports (shard_loop, submission, checking, collection, enqueueing, realtime_wait).


class ShardRecords(JobRecords, Protocol):
    """The job table as the poll loop reads and moves it: shards, their claims and rounds, counters."""

    def get_shard(self, job_id: str, shard_id: str) -> ShardRecord | None: ...

    def update_shard(self, job_id: str, shard_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None: ...

    def claim_submission(self, job_id: str, shard_id: str, token: str, *, stale_before: str) -> bool: ...

    def fail_shard(self, job_id: str, shard_id: str, reason: str) -> bool: ...

    def count_shard_error(self, job_id: str, shard_id: str) -> int: ...

    def add_to_job(self, job_id: str, **additions: int) -> None: ...

    def collect_round(
        self,
        job_id: str,
        shard_id: str,
        *,
        batch_id: str,
        additions: dict[str, int],
        fields: dict[str, Any],
        removals: tuple[str, ...],
    ) -> bool: ...

    def record_progress(self, job_id: str, key: str, *, at: str, route: str, done: int, **details: Any) -> bool: ...

    def answered_lines(self, job_id: str, lines: Iterable[int]) -> set[int]: ...


class BatchObjects(ObjectStore, Protocol):
    """The output bucket, plus a whole object to a local file (what a batch upload sends)."""

    def download(self, key: str, path: str) -> None: ...


class BatchProvider(Protocol):
    """A provider's Batch API: files up, batches created, found, read, cancelled."""

    def upload_batch_file(self, path: Path) -> str: ...

    def create_batch(
        self, *, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str]
    ) -> dict[str, Any]: ...

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]: ...

    def find_batch(self, metadata: dict[str, str]) -> dict[str, Any] | None: ...

    def cancel_batch(self, batch_id: str) -> dict[str, Any]: ...

    def file_lines(self, file_id: str) -> Iterator[bytes]: ...


class AdmissionLedger(Protocol):
    """The enqueued-token ledger of each model: room taken by a round's ticket, given back once."""

    def admit(self, model: str, ticket: str, tokens: int, limit: int) -> bool: ...

    def release(self, model: str, ticket: str) -> bool: ...


class BudgetReservations(Protocol):
    """The budget counters as the poll loop reserves and settles them, one ticket per round."""

    def usage(self, job_id: str, month: str) -> tuple[ScopeUsage, ScopeUsage]: ...

    def take(self, job_id: str, month: str, estimate_nano: int, *, piece: str | None = None) -> bool: ...

    def settle(self, job_id: str, month: str, piece: str, actual_nano: int) -> bool: ...


class RequestQueue(Protocol):
    """The realtime queue: messages sent in bulk; `spill` moves a body too big for a message aside."""

    def send_all(
        self, messages: Iterable[dict[str, Any]], *, spill: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> int: ...


class LineSpool(Protocol):
    """Records put back in line order without holding them in memory; closed when done."""

    def add(self, line: int, record: dict[str, Any]) -> None: ...

    def in_line_order(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Metrics(Protocol):
    """The dashboard's metrics. `count` adds to the invocation's record of job metrics; `publish`
    sends one metric in a record of its own, with its own dimensions. Units are CloudWatch's names."""

    def count(self, name: str, value: float = 1) -> None: ...

    def publish(self, name: str, value: float, unit: str = "Count", **dimensions: str) -> None: ...


class Clock(Protocol):
    """The time, as the poll loop reads it (a fake one walks a batch through its expiry in a test)."""

    def now(self) -> datetime: ...


class TableOutputs(Protocol):
    """A table job's results written as a table (parquet or CSV), one row per input row, in input
    order, joined to the row's columns; from the job's results and errors, written before."""

    def write(self, job: JobRecord, layout: JobLayout) -> str:
        """Write it; the key written in the output bucket."""
        ...

"""What the use cases need of the outside world, as small Protocols.

A use case is handed an implementation of each port it uses (the adapters in AWS and in the local
run, in-memory fakes in the unit tests) and never builds or imports one itself, so that its logic
can be read, and tested, without S3, DynamoDB or a provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol


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

    def get_job(self, job_id: str) -> dict[str, Any] | None: ...

    def list_shards(self, job_id: str) -> list[dict[str, Any]]: ...

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

"""In-memory stand-ins for the planner's outputs, so the domain is tested without S3."""

from __future__ import annotations

from dataclasses import dataclass, field

from batchline.domain.request_line import InvalidLine, ValidRequest


@dataclass
class MemoryShard:
    shard_id: str
    url: str
    model: str
    requests: list[ValidRequest] = field(default_factory=list)
    closed: bool = False

    def write(self, request: ValidRequest) -> None:
        assert not self.closed, "a closed shard received a request"
        self.requests.append(request)

    def close(self) -> None:
        self.closed = True


@dataclass
class MemoryPlanOutputs:
    shards: dict[str, MemoryShard] = field(default_factory=dict)
    invalid: list[InvalidLine] = field(default_factory=list)

    def open_shard(self, shard_id: str, url: str, model: str) -> MemoryShard:
        shard = self.shards[shard_id] = MemoryShard(shard_id, url, model)
        return shard

    def invalid_line(self, error: InvalidLine) -> None:
        self.invalid.append(error)

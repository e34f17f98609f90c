"""Where a job's objects live in the output bucket.

Final outputs sit under ``<output_prefix>/<job_id>/``; working files under
``staging/<job_id>/`` so a lifecycle rule can expire them without touching results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

STAGING_PREFIX = "staging"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_job_id(key: str, etag: str) -> str:
    """A readable, stable job id: the input file's name and its content tag.

    The same file uploaded again gets the same id (a later resume relies on this); a changed file
    gets a new one.
    """
    stem = _UNSAFE.sub("-", PurePosixPath(key).stem).strip("-")[:48] or "job"
    tag = _UNSAFE.sub("", etag)[:12] or "0"
    return f"{stem}-{tag}"


@dataclass(frozen=True)
class JobLayout:
    job_id: str
    output_prefix: str

    @property
    def results(self) -> str:
        return f"{self.output_prefix}/{self.job_id}/results.jsonl"

    @property
    def errors(self) -> str:
        return f"{self.output_prefix}/{self.job_id}/errors.jsonl"

    @property
    def summary(self) -> str:
        return f"{self.output_prefix}/{self.job_id}/summary.json"

    @property
    def invalid_lines(self) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/invalid.jsonl"

    def shard_requests(self, shard_id: str) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/requests.jsonl"

    def shard_manifest(self, shard_id: str) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/manifest.tsv"

    def shard_results(self, shard_id: str) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/results.jsonl"

    def shard_errors(self, shard_id: str) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/errors.jsonl"

    @property
    def realtime_results(self) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/results.jsonl"

    @property
    def realtime_errors(self) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/errors.jsonl"

    def realtime_body(self, line: int) -> str:
        """A request body too large for an SQS message."""
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/bodies/{line}.json"

    def realtime_outcome(self, line: int) -> str:
        """An outcome record too large for a DynamoDB item."""
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/outcomes/{line}.json"

"""Where a job's objects live in the output bucket.

Final outputs sit under ``<output_prefix>/<job_id>/``; working files under
``staging/<job_id>/`` so a lifecycle rule can expire them without touching results.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

STAGING_PREFIX = "staging"
# A table job's spec (template, model, schema, ...) is put in the input bucket under this prefix, which
# starts no job, and the table's object names it in this metadata key (its digest).
SPEC_PREFIX = "_batchline/specs"
SPEC_METADATA_KEY = "batchline-spec"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def content_hash(chunks: Iterable[bytes]) -> str:
    """sha256 of a file's bytes. Not the ETag: that is no content hash for multipart or KMS uploads."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def make_job_id(key: str, content_sha256: str) -> str:
    """A readable, stable job id: the input file's name and the hash of its content.

    The same file uploaded again gets the same id, and so resumes the job where it stopped,
    paying for nothing twice; a changed file gets a new one.
    """
    stem = _UNSAFE.sub("-", PurePosixPath(key).stem).strip("-")[:48] or "job"
    tag = _UNSAFE.sub("", content_sha256)[:16] or "0"
    return f"{stem}-{tag}"


def spec_key(spec_digest: str) -> str:
    """Where a table job's spec is kept in the input bucket."""
    return f"{SPEC_PREFIX}/{_UNSAFE.sub('', spec_digest)}.json"


def table_job_hash(content_sha256: str, spec_digest: str) -> str:
    """What names a table job: its table's content and its spec (a changed template is a new job)."""
    return hashlib.sha256(f"{content_sha256}:{spec_digest}".encode()).hexdigest()


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

    def table(self, output_format: str) -> str:
        """A table job's results as a table (parquet or csv), one row per input row."""
        return f"{self.output_prefix}/{self.job_id}/results.{output_format}"

    @property
    def invalid_lines(self) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/invalid.jsonl"

    # -- what Plan kept back from the shards (domain/answer_cache.py), each in line order --
    @property
    def cached_results(self) -> str:
        """The result records of the lines answered from the cache."""
        return f"{STAGING_PREFIX}/{self.job_id}/cached.jsonl"

    @property
    def duplicates(self) -> str:
        """(line, first line, custom_id) of each request that repeats an earlier line's."""
        return f"{STAGING_PREFIX}/{self.job_id}/duplicates.tsv"

    @property
    def request_keys(self) -> str:
        """(line, cache key, model) of each request sent, to keep its answer under."""
        return f"{STAGING_PREFIX}/{self.job_id}/request-keys.tsv"

    def shard_requests(self, shard_id: str) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/requests.jsonl"

    def shard_manifest(self, shard_id: str) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/manifest.tsv"

    @property
    def realtime_results(self) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/results.jsonl"

    @property
    def realtime_errors(self) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/errors.jsonl"

    def interim(self, name: str) -> str:
        """An output of a job still running, written when a local run is interrupted: results.jsonl,
        errors.jsonl, summary.json, and the realtime outcomes staged for them."""
        return f"{STAGING_PREFIX}/{self.job_id}/interim/{name}"

    def realtime_body(self, line: int) -> str:
        """A request body too large for an SQS message."""
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/bodies/{line}.json"

    @property
    def realtime_outcomes_prefix(self) -> str:
        """Where the workers write their outcome records: one JSON Lines object per invocation and job."""
        return f"{STAGING_PREFIX}/{self.job_id}/realtime/outcomes/"

    def realtime_outcomes(self, name: str) -> str:
        return f"{self.realtime_outcomes_prefix}{name}.jsonl"

    # -- rounds: round 0 is the planned shard; each later round holds the requests to try again --
    def round_requests(self, shard_id: str, round_number: int) -> str:
        if round_number == 0:
            return self.shard_requests(shard_id)
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/rounds/{round_number}/requests.jsonl"

    def round_manifest(self, shard_id: str, round_number: int) -> str:
        if round_number == 0:
            return self.shard_manifest(shard_id)
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/rounds/{round_number}/manifest.tsv"

    def round_upload(self, shard_id: str, round_number: int, model: str) -> str:
        """The round's requests rewritten for a fallback model."""
        safe = _UNSAFE.sub("-", model)
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/rounds/{round_number}/requests-{safe}.jsonl"

    def round_held(self, shard_id: str, round_number: int) -> str:
        """The (line, custom_id) of the requests of a refused round held back while its other half is sent."""
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/rounds/{round_number}/held.tsv"

    def round_results(self, shard_id: str, round_number: int) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/rounds/{round_number}/results.jsonl"

    def round_errors(self, shard_id: str, round_number: int) -> str:
        return f"{STAGING_PREFIX}/{self.job_id}/shards/{shard_id}/rounds/{round_number}/errors.jsonl"

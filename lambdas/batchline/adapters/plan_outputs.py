"""Plan outputs on S3: each shard's request file and manifest, and the invalid lines."""

from __future__ import annotations

import orjson

from batchline.adapters.s3_objects import S3Objects, S3StreamWriter
from batchline.domain.answer_cache import cached_result, encode_duplicate, encode_sent_keys
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import STAGE_VALIDATION, error_record
from batchline.domain.planning import encode_manifest_entry
from batchline.domain.request_line import InvalidLine, ValidRequest


class S3ShardWriter:
    def __init__(self, requests: S3StreamWriter, manifest: S3StreamWriter) -> None:
        self._requests = requests
        self._manifest = manifest

    def write(self, request: ValidRequest) -> None:
        self._requests.write(request.raw + b"\n")
        self._manifest.write(encode_manifest_entry(request.line, request.custom_id))

    def close(self) -> None:
        self._requests.close()
        self._manifest.close()

    def abort(self) -> None:
        self._requests.abort()
        self._manifest.abort()


class S3PlanOutputs:
    def __init__(self, objects: S3Objects, layout: JobLayout) -> None:
        self._objects = objects
        self._layout = layout
        self._invalid = objects.writer(layout.invalid_lines)
        self._open: list[S3ShardWriter] = []
        self.invalid_count = 0
        # What the planner keeps back from the shards (ReuseOutputs): opened on first use only.
        self._kept: dict[str, S3StreamWriter] = {}

    def open_shard(self, shard_id: str, url: str, model: str) -> S3ShardWriter:
        writer = S3ShardWriter(
            self._objects.writer(self._layout.shard_requests(shard_id)),
            self._objects.writer(self._layout.shard_manifest(shard_id), content_type="text/tab-separated-values"),
        )
        self._open.append(writer)
        return writer

    def invalid_line(self, error: InvalidLine) -> None:
        self.invalid_count += 1
        record = error_record(
            custom_id=error.custom_id, line=error.line, stage=STAGE_VALIDATION, code=error.code, message=error.message
        )
        self._invalid.write(orjson.dumps(record) + b"\n")

    # -- ReuseOutputs: the requests not sent (domain/answer_cache.py) --
    def _writer(self, key: str, content_type: str = "text/tab-separated-values") -> S3StreamWriter:
        writer = self._kept.get(key)
        if writer is None:
            writer = self._kept[key] = self._objects.writer(key, content_type=content_type)
        return writer

    def cached(self, request: ValidRequest, packed: bytes) -> None:
        record = cached_result(custom_id=request.custom_id, line=request.line, packed=packed)
        self._writer(self._layout.cached_results, "application/x-ndjson").write(orjson.dumps(record) + b"\n")

    def duplicate(self, request: ValidRequest, first_line: int) -> None:
        self._writer(self._layout.duplicates).write(encode_duplicate(request.line, first_line, request.custom_id))

    def sent(self, requests: list[ValidRequest], keys: list[str]) -> None:
        encoded = encode_sent_keys((r.line for r in requests), keys, (r.model for r in requests))
        self._writer(self._layout.request_keys).write(encoded)

    def close(self) -> None:
        self._invalid.close()
        for writer in self._kept.values():
            writer.close()

    def abort(self) -> None:
        self._invalid.abort()
        for writer in self._kept.values():
            writer.abort()
        for writer in self._open:
            writer.abort()

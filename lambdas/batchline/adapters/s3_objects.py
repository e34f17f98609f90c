"""S3 access for large objects: streamed reads and multipart writes, never a whole file in memory."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from batchline.adapters.aws_meter import default_session
from batchline.engines.streams import split_lines

READ_CHUNK_BYTES = 1 << 20


@cache
def s3_client() -> Any:
    return default_session().client("s3")


class S3Objects:
    def __init__(self, bucket: str, *, part_bytes: int, client: Any = None) -> None:
        self.bucket = bucket
        self._part_bytes = part_bytes
        self._client = client or s3_client()

    def head(self, key: str) -> tuple[str, dict[str, str]] | None:
        """(ETag, user metadata) of the object, or None when there is no such object."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except self._client.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head["ETag"].strip('"'), head.get("Metadata", {})

    def etag(self, key: str) -> str | None:
        """The object's ETag, or None when there is no such object."""
        head = self.head(key)
        return head[0] if head else None

    def exists(self, key: str) -> bool:
        return self.etag(key) is not None

    def chunks(self, key: str) -> Iterator[bytes]:
        body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK_BYTES)
        finally:
            body.close()

    def lines(self, key: str) -> Iterator[bytes]:
        """The object's lines, without their "\\n", streamed."""
        return split_lines(self.chunks(key))

    def download(self, key: str, path: str) -> None:
        self._client.download_file(self.bucket, key, path)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, in key order, page by page."""
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for entry in page.get("Contents", ()):
                yield entry["Key"]

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def writer(self, key: str, content_type: str = "application/x-ndjson") -> S3StreamWriter:
        return S3StreamWriter(self._client, self.bucket, key, self._part_bytes, content_type)


class S3StreamWriter:
    """Appends bytes to an S3 object, uploading a part each time `part_bytes` have gathered.

    Small objects (one part or less) become one PutObject. `close` completes the upload; `abort`
    drops it so no orphaned parts keep costing money.
    """

    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int, content_type: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_bytes = part_bytes
        self._content_type = content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.bytes_written += len(data)
        if len(self._buffer) >= self._part_bytes:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type
            )["UploadId"]
        number = len(self._parts) + 1
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=bytes(self._buffer)
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self._buffer.clear()

    def close(self) -> None:
        if self._upload_id is None:
            self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), ContentType=self._content_type
            )
            self._buffer.clear()
            return
        if self._buffer:
            self._flush_part()
        self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        self._buffer.clear()

    def __enter__(self) -> S3StreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

"""A table job's input and output tables in S3: the ports Plan and Finalize use for them.

Plan reads the table the user uploaded (CSV, TSV, parquet, JSON Lines of records) row by row and
renders each row into one request line by the job's spec (kept beside it in the input bucket, see
domain/layout.spec_key). Finalize reads it again, beside the job's results and errors in row
order, and writes the results table. A parquet file needs random access, so the table is copied
to local scratch space first (a Lambda function's /tmp, sized for it); neither step holds the
table in memory.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import orjson
import pyarrow.parquet as pq

from batchline.adapters.s3_objects import S3Objects
from batchline.datasets.output_table import Outcome, write_output_table
from batchline.datasets.plan_input import format_of, request_lines
from batchline.datasets.readers import read_batches
from batchline.datasets.spec import TableSpec
from batchline.domain.layout import JobLayout, spec_key
from batchline.domain.outcomes import usage_tokens
from batchline.domain.pricing import PriceBook
from batchline.domain.records import JobRecord
from batchline.domain.request_line import InvalidLine

_COPY_BYTES = 8 << 20


def read_spec(objects: S3Objects, spec_digest: str) -> TableSpec:
    """The job's spec, as the command line put it in the input bucket."""
    raw = b"".join(objects.chunks(spec_key(spec_digest)))
    return msgspec.json.decode(raw, type=TableSpec)


class S3TableInputs:
    """Plan's TableInputs: the uploaded table, rendered row by row."""

    def __init__(self, objects: Callable[[str], S3Objects]) -> None:
        self._objects = objects

    def lines(self, bucket: str, key: str, spec_digest: str) -> Iterator[tuple[int, bytes | InvalidLine]]:
        source = self._objects(bucket)
        spec = read_spec(source, spec_digest)
        with tempfile.TemporaryDirectory(prefix="batchline-table-") as scratch:
            path = Path(scratch) / PurePosixPath(key).name
            source.download(key, str(path))
            yield from request_lines(path, spec)


def _outcomes(output: S3Objects, layout: JobLayout) -> Iterator[Outcome]:
    """Every row's outcome, in row order: results.jsonl and errors.jsonl (each in line order) merged."""

    def stream(key: str, succeeded: bool) -> Iterator[tuple[int, dict[str, Any], bool]]:
        for raw in output.lines(key):
            if raw:
                record = orjson.loads(raw)
                yield int(record["line"]), record, succeeded

    yield from heapq.merge(stream(layout.results, True), stream(layout.errors, False), key=lambda item: item[0])


class S3TableOutputs:
    """Finalize's TableOutputs: the results table, written beside the job's other outputs."""

    def __init__(self, objects: Callable[[str], S3Objects], output: S3Objects, prices: PriceBook) -> None:
        self._objects = objects
        self._output = output
        self._prices = prices

    def _cost_of(self, record: dict[str, Any]) -> float | None:
        model = record.get("model")
        if not model or record.get("route") == "cache":
            return 0.0 if record.get("route") == "cache" else None
        body = (record.get("response") or {}).get("body") or {}
        input_tokens, output_tokens = usage_tokens(record.get("usage") or body.get("usage"))
        if record.get("route") == "realtime":
            return self._prices.realtime_cost(model, input_tokens, output_tokens)
        return self._prices.batch_cost(model, input_tokens, output_tokens)

    def write(self, job: JobRecord, layout: JobLayout) -> str:
        if not (job.bucket and job.key and job.spec_digest):
            raise ValueError(f"job {job.job_id} is no table job (no input table or spec on its record)")
        source = self._objects(job.bucket)
        spec = read_spec(source, job.spec_digest)
        fmt = format_of(spec, PurePosixPath(job.key).name)
        key = layout.table(spec.output_format)
        with tempfile.TemporaryDirectory(prefix="batchline-table-") as scratch:
            table = Path(scratch) / PurePosixPath(job.key).name
            source.download(job.key, str(table))
            written = Path(scratch) / f"results.{spec.output_format}"
            input_schema = pq.ParquetFile(table).schema_arrow if fmt == "parquet" else None
            write_output_table(
                read_batches(table, fmt),
                _outcomes(self._output, layout),
                spec,
                written,
                cost_of=self._cost_of,
                input_schema=input_schema,
            )
            content_type = "text/csv" if spec.output_format == "csv" else "application/vnd.apache.parquet"
            with self._output.writer(key, content_type) as writer, written.open("rb") as handle:
                while chunk := handle.read(_COPY_BYTES):
                    writer.write(chunk)
        return key

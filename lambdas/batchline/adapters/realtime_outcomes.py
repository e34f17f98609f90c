"""Realtime outcome records in S3: each worker invocation writes one JSON Lines object per job.

The records never go into the job table: a table that holds every answer makes each transaction
on it cost more as the job grows. Finalize reads the objects back and puts them in input order
(workflow.realtime_join).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import orjson

from batchline.adapters.s3_objects import S3Objects
from batchline.domain.layout import JobLayout


class S3OutcomeSpool:
    def __init__(self, objects: S3Objects, output_prefix: str) -> None:
        self._objects = objects
        self._prefix = output_prefix

    def write(self, job_id: str, records: Sequence[dict]) -> None:
        layout = JobLayout(job_id, self._prefix)
        # A fresh name each time: a retried invocation never overwrites what an earlier one wrote.
        key = layout.realtime_outcomes(uuid.uuid4().hex)
        self._objects.put(key, b"".join(orjson.dumps(record) + b"\n" for record in records), "application/x-ndjson")

    def records(self, job_id: str) -> Iterator[bytes]:
        """Every record written for the job, object by object, as raw JSON lines."""
        for key in self._objects.keys(JobLayout(job_id, self._prefix).realtime_outcomes_prefix):
            yield from (raw for raw in self._objects.lines(key) if raw)

"""What the job commands do to a stack: upload an input, read a job's items, fetch its outputs,
cancel it. The same boto3 calls against AWS and against the local stack's moto.

Cancelling does not stop the execution (unless asked to): it asks the job to send nothing more
(the job item's ``cancel_requested``), cancels the OpenAI batches in flight, and lets the
execution run on. The cancelled batches end "cancelled", the next poll collects what they finished and
makes their round the last, Submit sends no new batch, and Finalize writes the outputs with every
line accounted for. Stopping the execution at once would leave no one to collect what the
cancelled batches finished, and no outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from batchline.adapters.job_store import JobStore
from batchline.domain.answer_cache import CACHE_METADATA_KEY
from batchline.domain.budget import BUDGET_METADATA_KEY
from batchline.domain.errors import ProviderError
from batchline.domain.layout import SPEC_METADATA_KEY, JobLayout, make_job_id, spec_key, table_job_hash
from batchline.domain.records import JobRecord
from batchline.domain.routing import METADATA_KEY
from batchline.domain.statuses import BATCH_ENDED, BatchStatus, ShardStatus

from batchline_cli.job_progress import JobProgress, job_finished, job_progress, shown_status
from batchline_cli.stack_target import StackTarget

if TYPE_CHECKING:  # the OpenAI client takes a second and a half to import: only cancel needs it
    from batchline.adapters.openai_batches import OpenAIBatches

CANCEL_REASON = "cancelled by the user"
# A shard in one of these with no batch gets none once the job is cancelled.
UNSENT_SHARD_STATUSES = frozenset(
    {
        ShardStatus.PLANNED,
        ShardStatus.WAITING_ADMISSION,
        ShardStatus.RETRYING,
        ShardStatus.UPLOADED,
        ShardStatus.CANCELLED,
    }
)
CHUNK_BYTES = 1 << 20
# What a job leaves under jobs/<job_id>/ in the output bucket, in the order they are shown.
OUTPUT_NAMES = ("results.jsonl", "errors.jsonl", "summary.json", "report.html")

Progress = Callable[[int], None]


class JobNotFoundError(LookupError):
    """No job with this id in the stack's table; the message says where to look."""


class JobNotFinishedError(RuntimeError):
    """The job has no final outputs yet; the message says how far it is."""


class CancelError(RuntimeError):
    """The job cannot be cancelled (it ended already, or OpenAI cannot be reached); the message says why."""


@dataclass
class CancelOutcome:
    job_id: str
    cancelled_batches: list[str] = field(default_factory=list)
    failed_batches: list[tuple[str, str]] = field(default_factory=list)  # (batch id, why)
    not_sent: list[str] = field(default_factory=list)  # shards that will never get a batch
    stopped_executions: list[str] = field(default_factory=list)
    realtime: bool = False


def file_job_id(path: Path, key: str, on_bytes: Progress = lambda n: None, *, spec_digest: str | None = None) -> str:
    """The job id Plan will give this file under this key (its name and content hash, and for a table
    job its spec's digest)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            on_bytes(len(chunk))
    content = digest.hexdigest()
    return make_job_id(key, table_job_hash(content, spec_digest) if spec_digest else content)


def put_spec(s3: Any, bucket: str, spec: bytes, digest: str) -> dict[str, str]:
    """Put a table job's spec in the input bucket (before its table: the table starts the job); the
    metadata that names it on the table's object."""
    s3.put_object(Bucket=bucket, Key=spec_key(digest), Body=spec, ContentType="application/json")
    return {SPEC_METADATA_KEY: digest}


class JobsClient:
    def __init__(self, target: StackTarget) -> None:
        self.target = target
        self.store = JobStore(target.table, resource=target.resource("dynamodb"))
        self._s3 = target.client("s3")

    # -- submit ---------------------------------------------------------------------------------
    def upload(
        self,
        path: Path,
        *,
        key: str,
        mode: str | None,
        budget_usd: float | None,
        on_bytes: Progress = lambda n: None,
        spec: tuple[str, bytes] | None = None,
        cache: bool = True,
    ) -> None:
        """Put the file in the input bucket; the object-created trigger starts the job. `spec` is a table
        job's (digest, JSON), put beside it first; `cache=False` uploads it with ``batchline-cache: off``."""
        metadata = {METADATA_KEY: mode} if mode else {}
        if budget_usd is not None:
            metadata[BUDGET_METADATA_KEY] = repr(float(budget_usd))
        if not cache:
            metadata[CACHE_METADATA_KEY] = "off"
        if spec is not None:
            metadata |= put_spec(self._s3, self.target.input_bucket, spec[1], spec[0])
        self._s3.upload_file(
            str(path), self.target.input_bucket, key, ExtraArgs={"Metadata": metadata}, Callback=on_bytes
        )

    # -- reading jobs ---------------------------------------------------------------------------
    def job(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFoundError(
                f"no job {job_id!r} in {self.target.label}. `batchline status` lists its jobs; a file submitted "
                "a moment ago shows up once its planning starts"
            )
        return job

    def progress(self, job_id: str) -> JobProgress:
        job = self.job(job_id)
        return job_progress(job, self.store.list_shards(job_id))

    def recent_jobs(self, limit: int) -> list[JobProgress]:
        """The `limit` most recently started jobs, newest first; unfinished ones with their shards."""
        return [
            job_progress(job, [] if job_finished(job) else self.store.list_shards(job.job_id))
            for job in self.store.recent_jobs(limit)
        ]

    # -- results --------------------------------------------------------------------------------
    def outputs(self, job_id: str) -> list[tuple[str, int]]:
        """(key, size) of the job's outputs, once it finished; JobNotFinishedError before."""
        job = self.job(job_id)
        if not job_finished(job):
            view = job_progress(job, self.store.list_shards(job_id))
            raise JobNotFinishedError(
                f"job {job_id} has not finished yet ({view.status}, {view.done:,} of {view.valid:,} requests done): "
                f"follow it with `batchline status {job_id} --watch`, then fetch its results"
            )
        prefix = str(PurePosixPath(JobLayout(job_id, self.target.output_prefix).summary).parent) + "/"
        found = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.target.output_bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"].removeprefix(prefix)] = (item["Key"], int(item["Size"]))
        if "summary.json" not in found:
            raise JobNotFinishedError(
                f"job {job_id} is marked {job.status} but s3://{self.target.output_bucket}/{prefix} holds no "
                "summary.json: its outputs were moved or deleted"
            )
        ordered = [name for name in OUTPUT_NAMES if name in found] + sorted(set(found) - set(OUTPUT_NAMES))
        return [found[name] for name in ordered]

    def download(self, key: str, path: Path, on_bytes: Progress = lambda n: None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._s3.download_file(self.target.output_bucket, key, str(path), Callback=on_bytes)

    # -- cancel ---------------------------------------------------------------------------------
    def cancel(
        self, job_id: str, *, grace_seconds: float = 30.0, sleep: Callable[[float], None] = time.sleep
    ) -> CancelOutcome:
        """Ask the job to stop sending and cancel its batches in flight; the execution runs on.

        A Submit that read the job just before the request may be creating a batch right now (it
        holds the shard's submission claim): such shards are watched for up to `grace_seconds`,
        and the batch they create is cancelled too.
        """
        job = self.job(job_id)
        if job_finished(job):
            raise CancelError(f"job {job_id} has already ended ({shown_status(job)}): nothing to cancel")
        self.store.request_cancel(job_id, reason=CANCEL_REASON)
        outcome = CancelOutcome(job_id, realtime=job.route == "realtime")
        gateway: OpenAIBatches | None = None
        handled: set[str] = set()
        deadline = time.monotonic() + grace_seconds
        while True:
            shards = self.store.list_shards(job_id)
            for shard in shards:
                batch_id, status = shard.batch_id, shard.batch_status
                if not batch_id or batch_id in handled or status in BATCH_ENDED:
                    continue
                handled.add(batch_id)
                if status == BatchStatus.CANCELLING:
                    outcome.cancelled_batches.append(batch_id)
                    continue
                gateway = gateway or self.openai_batches()
                try:
                    gateway.cancel_batch(batch_id)
                    outcome.cancelled_batches.append(batch_id)
                except ProviderError as exc:  # cancelled or ended meanwhile, or the provider refused: say which
                    now = _batch_status(gateway, batch_id)
                    if now in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):  # the job's own poll got there first
                        outcome.cancelled_batches.append(batch_id)
                    elif now not in BATCH_ENDED:
                        outcome.failed_batches.append((batch_id, str(exc)))
            submitting = [s for s in shards if s.submit_claim and not s.batch_id]
            if not submitting or time.monotonic() >= deadline:
                break
            sleep(1.0)
        if not outcome.realtime:  # on the realtime route, every request is already queued
            outcome.not_sent = [
                s.shard_id
                for s in self.store.list_shards(job_id)
                if not s.batch_id and s.status in UNSENT_SHARD_STATUSES
            ]
        return outcome

    def stop_executions(self, job: JobRecord, *, sfn=None) -> list[str]:  # noqa: ANN001
        """Stop the running executions of this job (its input's bucket and key, and its id once planned).

        The job item then says so (``execution_stopped``): no Finalize will mark it ended.
        """
        sfn = sfn or self.target.client("stepfunctions")
        stopped = []
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.target.state_machine_arn, statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page["executions"]:
                arn = execution["executionArn"]
                if self._runs_job(sfn, arn, job):
                    sfn.stop_execution(executionArn=arn, error="Cancelled", cause=f"{CANCEL_REASON} (--now)")
                    stopped.append(arn)
        if stopped:
            self.store.update_job(job.job_id, execution_stopped=stopped[-1])
        return stopped

    @staticmethod
    def _runs_job(sfn, arn: str, job: JobRecord) -> bool:  # noqa: ANN001
        described = sfn.describe_execution(executionArn=arn)
        start = json.loads(described.get("input") or "{}")
        if (start.get("bucket"), start.get("key")) != (job.bucket, job.key):
            return False
        # The same key may hold another file (another job) by now: Plan's answer names the job.
        for event in sfn.get_execution_history(executionArn=arn, maxResults=100)["events"]:
            details = event.get("stateExitedEventDetails") or {}
            if details.get("name") == "Plan":
                output = json.loads(details.get("output") or "{}")
                planned = output.get("plan", output)
                return planned.get("job_id") in (None, job.job_id)
        return True  # not planned yet: the key is all there is to go by

    def openai_batches(self) -> OpenAIBatches:
        """The OpenAI Batches API the stack uses: the emulator locally; OPENAI_* or the stack's secret when deployed."""
        key = self.target.openai_api_key or os.environ.get("OPENAI_API_KEY")
        if not key and self.target.openai_key_secret_arn:
            secrets = self.target.client("secretsmanager")
            try:
                key = secrets.get_secret_value(SecretId=self.target.openai_key_secret_arn)["SecretString"].strip()
            except Exception as exc:  # noqa: BLE001 - any failure means: say where the key should come from
                raise CancelError(
                    f"cannot read the OpenAI key from {self.target.openai_key_secret_arn} ({exc}): set OPENAI_API_KEY "
                    "to cancel the batches"
                ) from None
        if not key:
            raise CancelError("no OpenAI API key to cancel the batches with: set OPENAI_API_KEY")
        from batchline.adapters.openai_batches import OpenAIBatches

        return OpenAIBatches(api_key=key, base_url=self.target.openai_base_url)


def _batch_status(gateway: OpenAIBatches, batch_id: str) -> str | None:
    try:
        return gateway.retrieve_batch(batch_id).get("status")
    except ProviderError:
        return None

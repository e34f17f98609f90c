"""The job table: one item per job and one per shard, in a single DynamoDB table.

Keys: pk = "JOB#<job_id>"; sk = "JOB" for the job, "SHARD#<shard_id>" for each shard,
"ANSWERED#<block>" for each block of 128 lines (the set of those answered on the realtime path;
the answers themselves are in S3), "SENDING#<invocation>" for the lines a worker invocation is
calling (removed with their answers) and "PROGRESS#<key>" for each collected batch round, so one Query
reads a whole job. Floats are stored as Decimal, as DynamoDB requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

import msgspec
from boto3.dynamodb.conditions import Key

from batchline.adapters.aws_meter import default_session
from batchline.domain.budget import month_of
from batchline.domain.realtime import JobState, SendingMark
from batchline.domain.records import JobRecord, ShardRecord, plain
from batchline.domain.statuses import ShardStatus
from batchline.topology import (
    JOB_LIST_ATTRIBUTE,
    JOB_LIST_VALUE,
    JOB_START_ATTRIBUTE,
    JOBS_BY_START_INDEX,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
)

RecordT = TypeVar("RecordT", JobRecord, ShardRecord)

JOB_SORT_KEY = "JOB"
SHARD_PREFIX = "SHARD#"
ANSWERED_PREFIX = "ANSWERED#"
SENDING_PREFIX = "SENDING#"
# Lines per item of answered line numbers: a set of 128 numbers stays under 1 KB, one write unit.
ANSWERED_BLOCK_LINES = 128
_MAX_BLOCKS_PER_TRANSACTION = 90  # DynamoDB takes 100 items per transaction; room for the job and budgets
PROGRESS_PREFIX = "PROGRESS#"
_LINE_DIGITS = 12  # zero-padded so that sort keys order outcomes by input line


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


# Attributes of the table's own, on every item: its keys and the jobs-by-start index's keys.
_TABLE_ATTRIBUTES = frozenset(
    {TABLE_PARTITION_KEY, TABLE_SORT_KEY, JOB_LIST_ATTRIBUTE, JOB_START_ATTRIBUTE, "updated_at"}
)


def _record(kind: type[RecordT], item: dict[str, Any]) -> RecordT:
    """A job or shard item read back as its typed record (see domain/records.py). An item that an
    update created (Finalize of an input never planned) names its job by its key alone."""
    fields = _from_dynamo(item)
    fields.setdefault("job_id", str(item[TABLE_PARTITION_KEY]).removeprefix("JOB#"))
    return msgspec.convert(fields, kind, strict=False)


def _item_of(record: ShardRecord) -> dict[str, Any]:
    """A new shard's item: its fields, without those still at their "not yet" value (DynamoDB holds no
    empty strings in keys, and absent attributes keep the conditions on them simple)."""
    return {name: value for name, value in plain(record).items() if value is not None}


def _checked(kind: type[JobRecord | ShardRecord], names: Iterable[str]) -> None:
    """Refuse to write an attribute the record does not declare: a misspelt field would be lost."""
    unknown = sorted(set(names) - set(kind.__struct_fields__) - _TABLE_ATTRIBUTES)
    if unknown:
        raise ValueError(f"{kind.__name__} has no field {', '.join(unknown)}")


@cache
def dynamodb_resource() -> Any:
    return default_session().resource("dynamodb")


class JobStore:
    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or dynamodb_resource()).Table(table_name)

    @staticmethod
    def _key(job_id: str, sort_key: str) -> dict:
        return {TABLE_PARTITION_KEY: f"JOB#{job_id}", TABLE_SORT_KEY: sort_key}

    def put_job(self, job_id: str, **fields: Any) -> None:
        _checked(JobRecord, fields)
        item = {
            **self._key(job_id, JOB_SORT_KEY),
            "job_id": job_id,
            "updated_at": now_iso(),
            JOB_LIST_ATTRIBUTE: JOB_LIST_VALUE,  # listed in the jobs-by-start index
            **fields,
        }
        self._table.put_item(Item=_to_dynamo(item))

    def update_job(self, job_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        """Set `fields` on the job and delete the attributes named in `remove`."""
        if JOB_START_ATTRIBUTE in fields and fields[JOB_START_ATTRIBUTE] is None:
            # A key of the jobs-by-start index is a string or absent: DynamoDB refuses a null one.
            fields = {name: value for name, value in fields.items() if name != JOB_START_ATTRIBUTE}
            remove = (*remove, JOB_START_ATTRIBUTE)
        _checked(JobRecord, [*fields, *remove])
        self._update(self._key(job_id, JOB_SORT_KEY), fields, remove)

    def put_shards(self, job_id: str, shards: list[ShardRecord]) -> None:
        with self._table.batch_writer() as batch:
            for shard in shards:
                item = {
                    **self._key(job_id, SHARD_PREFIX + shard.shard_id),
                    "updated_at": now_iso(),
                    **_item_of(shard),
                }
                batch.put_item(Item=_to_dynamo(item))

    def update_shard(self, job_id: str, shard_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        """Set `fields` on a shard and delete the attributes named in `remove`."""
        _checked(ShardRecord, [*fields, *remove])
        self._update(self._key(job_id, SHARD_PREFIX + shard_id), fields, remove)

    def collect_round(
        self, job_id: str, shard_id: str, *, batch_id: str, additions: dict, fields: dict, removals: tuple[str, ...]
    ) -> bool:
        """Count one collected batch on its shard, once: False when this batch was counted before."""
        _checked(ShardRecord, [*fields, *additions, *removals])
        fields = {**fields, "collected_batch_id": batch_id, "updated_at": now_iso()}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        names |= {f"#a{i}": name for i, name in enumerate(additions)}
        names |= {f"#r{i}": name for i, name in enumerate(removals)}
        values = {f":v{i}": _to_dynamo(value) for i, value in enumerate(fields.values())}
        values |= {f":a{i}": _to_dynamo(value) for i, value in enumerate(additions.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        if additions:
            expression += " ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(additions)))
        if removals:
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removals)))
        client = self._table.meta.client
        try:
            self._table.update_item(
                Key=self._key(job_id, SHARD_PREFIX + shard_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(collected_batch_id) OR collected_batch_id <> :batch",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**values, ":batch": batch_id},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim_submission(self, job_id: str, shard_id: str, token: str, *, stale_before: str) -> bool:
        """Take the right to create a shard's batch; False while another attempt holds it.

        Two executions of the same job (the same file uploaded twice in quick succession) must not
        both create a batch for a shard: only the holder of the claim does. A claim older than
        `stale_before` (an attempt that died) can be taken over.
        """
        client = self._table.meta.client
        try:
            self._table.update_item(
                Key=self._key(job_id, SHARD_PREFIX + shard_id),
                UpdateExpression="SET submit_claim = :token, submit_claimed_at = :now",
                ConditionExpression="attribute_not_exists(batch_id) AND (attribute_not_exists(submit_claim) "
                "OR submit_claim = :token OR submit_claimed_at < :stale)",
                ExpressionAttributeValues={":token": token, ":now": now_iso(), ":stale": stale_before},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def fail_shard(self, job_id: str, shard_id: str, reason: str) -> bool:
        """Mark a shard failed, unless it was collected after all; False then."""
        client = self._table.meta.client
        try:
            self._table.update_item(
                Key=self._key(job_id, SHARD_PREFIX + shard_id),
                UpdateExpression="SET #status = :failed, failure = :reason, updated_at = :now",
                ConditionExpression="#status <> :collected",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":failed": ShardStatus.FAILED,
                    ":reason": reason,
                    ":now": now_iso(),
                    ":collected": ShardStatus.COLLECTED,
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def count_shard_error(self, job_id: str, shard_id: str) -> int:
        """Count one more failed attempt at a shard's step in a row; the count so far."""
        answer = self._table.update_item(
            Key=self._key(job_id, SHARD_PREFIX + shard_id),
            UpdateExpression="ADD step_errors :one SET updated_at = :now",
            ExpressionAttributeValues={":one": 1, ":now": now_iso()},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["step_errors"])

    def add_to_job(self, job_id: str, **additions: int) -> None:
        _checked(JobRecord, additions)
        names = {f"#a{i}": name for i, name in enumerate(additions)}
        values = {f":a{i}": value for i, value in enumerate(additions.values())}
        self._table.update_item(
            Key=self._key(job_id, JOB_SORT_KEY),
            UpdateExpression="ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(additions))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def _update(self, key: dict, fields: dict, remove: tuple[str, ...] = ()) -> None:
        fields = {**fields, "updated_at": now_iso()}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        names |= {f"#r{i}": name for i, name in enumerate(remove)}
        values = {f":v{i}": _to_dynamo(value) for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        if remove:
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        self._table.update_item(
            Key=key, UpdateExpression=expression, ExpressionAttributeNames=names, ExpressionAttributeValues=values
        )

    # -- realtime outcomes: answers in S3, and which lines have one in blocks of line numbers ---
    @staticmethod
    def _block_key(job_id: str, block: int) -> dict:
        return JobStore._key(job_id, f"{ANSWERED_PREFIX}{block:0{_LINE_DIGITS}d}")

    def answered_lines(self, job_id: str, lines: Iterable[int]) -> set[int]:
        """Which of `lines` have an answer recorded (read in one BatchGetItem per 100 blocks)."""
        wanted = set(lines)
        blocks = sorted({line // ANSWERED_BLOCK_LINES for line in wanted})
        answered: set[int] = set()
        client = self._table.meta.client
        for start in range(0, len(blocks), 100):
            keys = [self._block_key(job_id, block) for block in blocks[start : start + 100]]
            request = {
                self._table.name: {
                    "Keys": keys,
                    "ConsistentRead": True,
                    "ProjectionExpression": "#l",
                    "ExpressionAttributeNames": {"#l": "lines"},
                }
            }
            while request:
                answer = client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table.name, []):
                    answered |= {int(line) for line in item.get("lines", ())}
                request = answer.get("UnprocessedKeys") or {}
        return answered & wanted

    def mark_sending(self, job_id: str, invocation: str, lines: Iterable[int], *, until: float) -> None:
        """Note, before calling, that `invocation` sends `lines` and ends by `until` (one UpdateItem)."""
        self._table.update_item(
            Key=self._key(job_id, SENDING_PREFIX + invocation),
            UpdateExpression="ADD #lines :lines SET #until = :until, since = if_not_exists(since, :now)",
            ExpressionAttributeNames={"#lines": "lines", "#until": "until"},
            ExpressionAttributeValues={
                ":lines": set(lines),
                ":until": Decimal(str(round(until, 3))),
                ":now": now_iso(),
            },
        )

    def sending_marks(self, job_id: str) -> list[SendingMark]:
        """Every invocation's mark of lines being sent (live ones, and those of invocations that died)."""
        return [
            SendingMark(
                invocation=str(item[TABLE_SORT_KEY]).removeprefix(SENDING_PREFIX),
                lines=frozenset(int(line) for line in item.get("lines", ())),
                until=float(item.get("until", 0)),
                since=str(item.get("since", "")),
            )
            for item in self._query_prefix(job_id, SENDING_PREFIX)
        ]

    def record_answers(
        self,
        job_id: str,
        *,
        lines: Iterable[int],
        counters: dict[str, int],
        also: tuple[dict, ...] = (),
        finished_sending: str | None = None,
    ) -> set[int]:
        """Mark `lines` answered and ADD `counters` to the job, in one transaction, only for new lines.

        Returns the lines that were already answered (a duplicate delivery, or a worker that ran
        again after a crash): those are left out and the transaction runs again without them, so a
        line is counted once however often it is delivered. `counters` must not count the
        duplicates: `recount(duplicates)` is the caller's, so this returns them first when any.
        `also` holds more transaction items (the month's budget). `finished_sending` names the
        invocation whose sending mark goes with these answers.
        """
        by_block: dict[int, list[int]] = {}
        for line in sorted(set(lines)):
            by_block.setdefault(line // ANSWERED_BLOCK_LINES, []).append(line)
        if len(by_block) > _MAX_BLOCKS_PER_TRANSACTION:
            raise ValueError(
                f"{len(by_block)} blocks of lines in one transaction; at most {_MAX_BLOCKS_PER_TRANSACTION}"
            )
        items: list[dict] = []
        for block, block_lines in by_block.items():
            values: dict[str, Any] = {":lines": set(block_lines), ":now": now_iso()}
            conditions = []
            for i, line in enumerate(block_lines):
                values[f":l{i}"] = line
                conditions.append(f"NOT contains(#lines, :l{i})")
            items.append(
                {
                    "Update": {
                        "TableName": self._table.name,
                        "Key": self._block_key(job_id, block),
                        "UpdateExpression": "ADD #lines :lines SET updated_at = :now",
                        "ConditionExpression": "attribute_not_exists(#lines) OR (" + " AND ".join(conditions) + ")",
                        "ExpressionAttributeNames": {"#lines": "lines"},
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        additions = {name: value for name, value in counters.items() if value}
        names = {f"#a{i}": name for i, name in enumerate(additions)}
        values = {f":a{i}": _to_dynamo(value) for i, value in enumerate(additions.values())}
        values[":now"] = now_iso()
        update = "SET realtime_updated_at = :now"
        if additions:
            update = "ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(additions))) + " " + update
        job_update: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": self._key(job_id, JOB_SORT_KEY),
            "UpdateExpression": update,
            "ExpressionAttributeValues": values,
        }
        if names:
            job_update["ExpressionAttributeNames"] = names
        client = self._table.meta.client
        try:
            done_sending = (
                [
                    {
                        "Delete": {
                            "TableName": self._table.name,
                            "Key": self._key(job_id, SENDING_PREFIX + finished_sending),
                        }
                    }
                ]
                if finished_sending
                else []
            )
            client.transact_write_items(TransactItems=[*items, {"Update": job_update}, *also, *done_sending])
        except client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            if any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons[: len(items)]):
                return self.answered_lines(job_id, lines)
            raise RuntimeError(f"recording the answers of lines {sorted(set(lines))[:5]}... failed: {reasons}") from exc
        return set()

    # -- progress: one item per collected batch round, for the report -------------------------
    def record_progress(self, job_id: str, key: str, *, at: str, route: str, done: int, **details: Any) -> bool:
        """Note that `done` requests got their final outcome on `route` at `at`, once per `key`.

        `key` names the event (a shard's round: "<shard_id>#<round>"), so a step that runs again
        writes nothing twice: False then. `details` (batch_id, shard_id, round, submitted_at,
        requests, batch_status) are stored with it; None values are left out. An UpdateItem, so
        that a function allowed to update the job's items needs no other permission.
        """
        fields = {"at": at, "route": route, "done": done, **{k: v for k, v in details.items() if v is not None}}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": _to_dynamo(value) for i, value in enumerate(fields.values())}
        client = self._table.meta.client
        try:
            self._table.update_item(
                Key=self._key(job_id, PROGRESS_PREFIX + key),
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
                ConditionExpression=f"attribute_not_exists({TABLE_SORT_KEY})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def progress(self, job_id: str) -> list[dict]:
        """Every progress item of a job, oldest first."""
        items = [_from_dynamo(item) for item in self._query_prefix(job_id, PROGRESS_PREFIX)]
        return sorted(items, key=lambda item: str(item.get("at", "")))

    def job_state(self, job_id: str) -> JobState:
        """The month a job's budget counts in and why it stopped sending, if it did (one read)."""
        item = (
            self._table.get_item(
                Key=self._key(job_id, JOB_SORT_KEY),
                ConsistentRead=True,
                ProjectionExpression="budget_month, halted",
            ).get("Item")
            or {}
        )
        return JobState(budget_month=item.get("budget_month") or month_of(), halted=item.get("halted") or None)

    def halt_job(self, job_id: str, reason: str) -> None:
        """Stop a job for good (e.g. insufficient quota): workers record its remaining requests as errors."""
        self._update(self._key(job_id, JOB_SORT_KEY), {"halted": reason})

    def request_cancel(self, job_id: str, *, reason: str) -> bool:
        """Ask a running job to stop sending: False when there is no such job.

        Submit then sends no new batch (the shard ends "cancelled"), collecting makes the round it
        collects the last one, and the realtime workers record every request not yet sent as an
        error (through ``halted``). Work in flight ends on its own, and Finalize writes the outputs.
        """
        client = self._table.meta.client
        try:
            self._table.update_item(
                Key=self._key(job_id, JOB_SORT_KEY),
                UpdateExpression="SET cancel_requested = :now, halted = :reason, updated_at = :now",
                ConditionExpression=f"attribute_exists({TABLE_PARTITION_KEY})",
                ExpressionAttributeValues={":now": now_iso(), ":reason": reason},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def recent_jobs(self, limit: int) -> list[JobRecord]:
        """The `limit` most recently started jobs, newest first: a query of the jobs-by-start index,
        which holds the job items alone, so it reads `limit` items whatever else the table holds."""
        jobs: list[JobRecord] = []
        kwargs: dict[str, Any] = {
            "IndexName": JOBS_BY_START_INDEX,
            "KeyConditionExpression": Key(JOB_LIST_ATTRIBUTE).eq(JOB_LIST_VALUE),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        while len(jobs) < limit:
            page = self._table.query(**kwargs)
            jobs += [_record(JobRecord, item) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return jobs[:limit]

    def get_job(self, job_id: str) -> JobRecord | None:
        item = self._table.get_item(Key=self._key(job_id, JOB_SORT_KEY), ConsistentRead=True).get("Item")
        return _record(JobRecord, item) if item else None

    def get_shard(self, job_id: str, shard_id: str) -> ShardRecord | None:
        item = self._table.get_item(Key=self._key(job_id, SHARD_PREFIX + shard_id), ConsistentRead=True).get("Item")
        return _record(ShardRecord, item) if item else None

    def list_shards(self, job_id: str) -> list[ShardRecord]:
        """The job's shards, in shard order."""
        return [_record(ShardRecord, item) for item in self._query_prefix(job_id, SHARD_PREFIX)]

    def _query_prefix(self, job_id: str, prefix: str) -> Iterator[dict]:
        """Every item of a job whose sort key starts with `prefix`, in sort-key order, page by page."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key(TABLE_PARTITION_KEY).eq(f"JOB#{job_id}")
            & Key(TABLE_SORT_KEY).begins_with(prefix),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**kwargs)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

"""The job table: one item per job and one per shard, in a single DynamoDB table.

Keys: pk = "JOB#<job_id>"; sk = "JOB" for the job, "SHARD#<shard_id>" for each shard, so one
Query reads a whole job. Floats are stored as Decimal, as DynamoDB requires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import boto3
from boto3.dynamodb.conditions import Key

from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY

JOB_SORT_KEY = "JOB"
SHARD_PREFIX = "SHARD#"


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


@cache
def dynamodb_resource() -> Any:
    return boto3.resource("dynamodb")


class JobStore:
    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or dynamodb_resource()).Table(table_name)

    @staticmethod
    def _key(job_id: str, sort_key: str) -> dict:
        return {TABLE_PARTITION_KEY: f"JOB#{job_id}", TABLE_SORT_KEY: sort_key}

    def put_job(self, job_id: str, **fields: Any) -> None:
        item = {**self._key(job_id, JOB_SORT_KEY), "job_id": job_id, "updated_at": now_iso(), **fields}
        self._table.put_item(Item=_to_dynamo(item))

    def update_job(self, job_id: str, **fields: Any) -> None:
        self._update(self._key(job_id, JOB_SORT_KEY), fields)

    def put_shards(self, job_id: str, shards: list[dict]) -> None:
        with self._table.batch_writer() as batch:
            for shard in shards:
                item = {
                    **self._key(job_id, SHARD_PREFIX + shard["shard_id"]),
                    "job_id": job_id,
                    "updated_at": now_iso(),
                    **shard,
                }
                batch.put_item(Item=_to_dynamo(item))

    def update_shard(self, job_id: str, shard_id: str, **fields: Any) -> None:
        self._update(self._key(job_id, SHARD_PREFIX + shard_id), fields)

    def _update(self, key: dict, fields: dict) -> None:
        fields = {**fields, "updated_at": now_iso()}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": _to_dynamo(value) for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        self._table.update_item(
            Key=key, UpdateExpression=expression, ExpressionAttributeNames=names, ExpressionAttributeValues=values
        )

    def get_job(self, job_id: str) -> dict | None:
        item = self._table.get_item(Key=self._key(job_id, JOB_SORT_KEY), ConsistentRead=True).get("Item")
        return _from_dynamo(item) if item else None

    def get_shard(self, job_id: str, shard_id: str) -> dict | None:
        item = self._table.get_item(Key=self._key(job_id, SHARD_PREFIX + shard_id), ConsistentRead=True).get("Item")
        return _from_dynamo(item) if item else None

    def list_shards(self, job_id: str) -> list[dict]:
        items: list[dict] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key(TABLE_PARTITION_KEY).eq(f"JOB#{job_id}")
            & Key(TABLE_SORT_KEY).begins_with(SHARD_PREFIX),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**kwargs)
            items.extend(_from_dynamo(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

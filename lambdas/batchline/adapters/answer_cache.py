"""The answer cache in the job table: one item per request key (pk ``CACHE#<key>``, sk ``ANSWER``).

Each item holds the packed answer (domain/answer_cache.py) in base64 text, and when it was kept.
Text, not a binary attribute that would save a quarter of the bytes: the local stack's durable
journal (batchline_local/durable_state.py) writes items as JSON and cannot hold a binary one yet.
Plan reads the items 100 keys to a BatchGetItem (DynamoDB's limit), Finalize writes them 25 to a
BatchWriteItem (boto3's batch_writer). Locally the job table is kept in --state-dir like the rest
of the local stack's state, so a second run in a new process finds them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from typing import Any

from batchline.adapters.job_store import dynamodb_resource, now_iso
from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY

CACHE_PREFIX = "CACHE#"
ANSWER_SORT_KEY = "ANSWER"
_GET_BATCH = 100  # keys per BatchGetItem
_RETRIES = 8  # rounds of unprocessed keys before the rest count as unknown (they are then sent)


class DynamoAnswerCache:
    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._resource = resource or dynamodb_resource()
        self._table_name = table_name
        self._table = self._resource.Table(table_name)

    @staticmethod
    def _key(key: str) -> dict[str, str]:
        return {TABLE_PARTITION_KEY: f"{CACHE_PREFIX}{key}", TABLE_SORT_KEY: ANSWER_SORT_KEY}

    def known(self, keys: list[str]) -> dict[str, bytes]:
        """The packed answers of the keys that have one; a key DynamoDB keeps leaving unprocessed is
        treated as unknown (its request is sent: paying once more, never losing a line)."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _GET_BATCH):
            request: dict[str, Any] = {
                self._table_name: {
                    "Keys": [self._key(key) for key in unique[start : start + _GET_BATCH]],
                    "ProjectionExpression": "#pk, answer",
                    "ExpressionAttributeNames": {"#pk": TABLE_PARTITION_KEY},
                }
            }
            for attempt in range(_RETRIES):
                response = self._resource.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table_name, ()):
                    answer = item.get("answer")
                    if answer is not None:
                        found[str(item[TABLE_PARTITION_KEY]).removeprefix(CACHE_PREFIX)] = base64.b64decode(answer)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 2.0))
        return found

    def keep(self, answers: Iterable[tuple[str, bytes]]) -> int:
        """Write each (key, packed answer); a key given twice is written once (its last answer)."""
        written = 0
        at = now_iso()
        with self._table.batch_writer(overwrite_by_pkeys=[TABLE_PARTITION_KEY, TABLE_SORT_KEY]) as batch:
            for key, packed in answers:
                batch.put_item(Item={**self._key(key), "answer": base64.b64encode(packed).decode(), "kept_at": at})
                written += 1
        return written

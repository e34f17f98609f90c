"""The enqueued-token ledger: prompt tokens of every batch in flight, per model, across all jobs.

OpenAI refuses a batch (it fails with token_limit_exceeded) when the organisation's queue for a
model would hold more prompt tokens than its limit. Submitting only what fits keeps batches out
of that failure. One ledger item per model holds the total; one ticket item per admitted batch
holds its share, so that admitting and releasing are each done once, however often a step is
retried (a transaction writes or deletes the ticket together with the ADD on the total).
"""

from __future__ import annotations

from typing import Any

from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY

_LEDGER_SORT_KEY = "LEDGER"


class DynamoAdmissionLedger:
    def __init__(self, table: Any) -> None:
        self._table = table
        self._client = table.meta.client

    @staticmethod
    def _key(model: str, sort_key: str) -> dict:
        return {TABLE_PARTITION_KEY: f"ENQUEUED#{model}", TABLE_SORT_KEY: sort_key}

    def enqueued_tokens(self, model: str) -> int:
        item = self._table.get_item(Key=self._key(model, _LEDGER_SORT_KEY), ConsistentRead=True).get("Item") or {}
        return int(item.get("tokens", 0))

    def admit(self, model: str, ticket: str, tokens: int, limit: int) -> bool:
        """Take room for a batch of `tokens` prompt tokens; False when the model's queue has no room now.

        Admitting the same ticket again is a no-op that answers True: the batch already holds its room.
        """
        if tokens > limit:
            return False  # could never fit; planning cuts shards so that this does not happen
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": {**self._key(model, f"TICKET#{ticket}"), "tokens": tokens},
                            "ConditionExpression": f"attribute_not_exists({TABLE_SORT_KEY})",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": self._key(model, _LEDGER_SORT_KEY),
                            "UpdateExpression": "ADD tokens :tokens",
                            "ConditionExpression": "attribute_not_exists(tokens) OR tokens <= :room",
                            "ExpressionAttributeValues": {":tokens": tokens, ":room": limit - tokens},
                        }
                    },
                ]
            )
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return True  # this ticket was admitted before
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                return False
            raise
        return True

    def release(self, model: str, ticket: str) -> bool:
        """Give a finished batch's room back; False when the ticket was already released (or never admitted)."""
        item = self._table.get_item(Key=self._key(model, f"TICKET#{ticket}"), ConsistentRead=True).get("Item")
        if item is None:
            return False
        tokens = int(item["tokens"])
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._table.name,
                            "Key": self._key(model, f"TICKET#{ticket}"),
                            "ConditionExpression": f"attribute_exists({TABLE_SORT_KEY})",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": self._key(model, _LEDGER_SORT_KEY),
                            "UpdateExpression": "ADD tokens :minus",
                            "ExpressionAttributeValues": {":minus": -tokens},
                        }
                    },
                ]
            )
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return False  # released by a concurrent or earlier attempt
            raise
        return True

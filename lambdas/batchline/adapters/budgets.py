"""Budget counters in DynamoDB: per job (on the job's item) and per calendar month (one item each).

See batchline.domain.budget for the model. Every change that must be checked against a cap is a
conditional update, so concurrent workers can never reserve past it together; changes that touch
a job and its month are one transaction. Pieces of work (a batch round) carry a ticket item so
that a retried step reserves and settles once; realtime requests, already called exactly once,
reserve without one and settle inside the transaction that records their outcome.
"""

from __future__ import annotations

from typing import Any

from batchline.domain.budget import ScopeUsage, refusal_message
from batchline.domain.errors import BudgetRefusedError
from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY

_MONTH_PARTITION = "BUDGET#MONTH"


def _fits(attribute: str, cap_nano: int | None, estimate_nano: int, values: dict, name: str) -> str | None:
    """A condition that `attribute + estimate` stays within the cap, or None when there is no cap.

    A counter not yet written counts as zero, so an estimate larger than the whole cap can never fit.
    """
    if cap_nano is None:
        return None
    values[name] = cap_nano - estimate_nano
    if estimate_nano > cap_nano:
        return f"{attribute} <= {name}"  # false whether or not the counter exists yet
    return f"(attribute_not_exists({attribute}) OR {attribute} <= {name})"


class DynamoBudgets:
    def __init__(self, table: Any, *, month_cap_nano: int | None) -> None:
        self._table = table
        self._client = table.meta.client
        self._month_cap = month_cap_nano

    # -- keys ------------------------------------------------------------------------------
    @staticmethod
    def _job_key(job_id: str) -> dict:
        return {TABLE_PARTITION_KEY: f"JOB#{job_id}", TABLE_SORT_KEY: "JOB"}

    @staticmethod
    def _ticket_key(job_id: str, piece: str) -> dict:
        return {TABLE_PARTITION_KEY: f"JOB#{job_id}", TABLE_SORT_KEY: f"BUDGET#{piece}"}

    @staticmethod
    def _month_key(month: str) -> dict:
        return {TABLE_PARTITION_KEY: _MONTH_PARTITION, TABLE_SORT_KEY: month}

    @property
    def month_cap_nano(self) -> int | None:
        return self._month_cap

    # -- reading ---------------------------------------------------------------------------
    def usage(self, job_id: str, month: str) -> tuple[ScopeUsage, ScopeUsage]:
        job = self._table.get_item(Key=self._job_key(job_id), ConsistentRead=True).get("Item") or {}
        month_item = self._table.get_item(Key=self._month_key(month), ConsistentRead=True).get("Item") or {}
        cap = job.get("budget_cap_nano")
        return (
            ScopeUsage(
                "job",
                int(cap) if cap is not None else None,
                int(job.get("committed_nano", 0)),
                int(job.get("hold_nano", 0)),
            ),
            ScopeUsage("monthly", self._month_cap, int(month_item.get("committed_nano", 0))),
        )

    def month_spent_nano(self, month: str) -> int:
        item = self._table.get_item(Key=self._month_key(month), ConsistentRead=True).get("Item") or {}
        return int(item.get("spent_nano", 0))

    # -- transactions ----------------------------------------------------------------------
    def _month_update(self, month: str, committed: int, spent: int = 0, *, estimate_for_cap: int | None = None) -> dict:
        values: dict[str, Any] = {":c": committed, ":s": spent}
        update: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": self._month_key(month),
            "UpdateExpression": "ADD committed_nano :c, spent_nano :s",
            "ExpressionAttributeValues": values,
        }
        if estimate_for_cap is not None:
            condition = _fits("committed_nano", self._month_cap, estimate_for_cap, values, ":room")
            if condition:
                update["ConditionExpression"] = condition
        return {"Update": update}

    def _transact(self, items: list[dict]) -> list[str | None]:
        """Run a transaction; the cancellation reason codes per item, or an empty list on success."""
        try:
            self._client.transact_write_items(TransactItems=items)
        except self._client.exceptions.TransactionCanceledException as exc:
            codes = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
            if any(code not in (None, "None", "ConditionalCheckFailed") for code in codes):
                raise
            return codes
        return []

    def hold(self, job_id: str, month: str, estimate_nano: int) -> None:
        """Reserve a planned job's whole estimate, or refuse the job before anything is sent.

        Holding again while a hold is in place does nothing (a retried or resumed Plan).
        """
        job_scope, month_scope = self.usage(job_id, month)
        if job_scope.hold_nano > 0:
            return
        values: dict[str, Any] = {":e": estimate_nano, ":m": month, ":zero": 0}
        conditions = ["(attribute_not_exists(hold_nano) OR hold_nano = :zero)"]
        cap_condition = _fits("committed_nano", job_scope.cap_nano, estimate_nano, values, ":room")
        if cap_condition:
            conditions.append(cap_condition)
        codes = self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table.name,
                        "Key": self._job_key(job_id),
                        "UpdateExpression": "SET hold_nano = :e, budget_month = :m ADD committed_nano :e",
                        "ConditionExpression": " AND ".join(conditions),
                        "ExpressionAttributeValues": values,
                    }
                },
                self._month_update(month, estimate_nano, estimate_for_cap=estimate_nano),
            ]
        )
        if not codes:
            return
        job_scope, month_scope = self.usage(job_id, month)
        if job_scope.hold_nano > 0:
            return  # a concurrent attempt placed it
        scope = job_scope if codes[0] == "ConditionalCheckFailed" else month_scope
        raise BudgetRefusedError(refusal_message(scope.name, estimate_nano, scope.cap_nano or 0, scope.room_nano or 0))

    def take(self, job_id: str, month: str, estimate_nano: int, *, piece: str | None = None) -> bool:
        """Reserve one piece of work: out of the job's hold when it has enough, else against the caps.

        With a `piece` name the reservation is made once: taking it again answers True. False means
        no room is left in the job's or the month's budget.
        """
        ticket: list[dict] = []
        if piece is not None:
            ticket = [
                {
                    "Put": {
                        "TableName": self._table.name,
                        "Item": {
                            **self._ticket_key(job_id, piece),
                            "reserved_nano": estimate_nano,
                            "state": "reserved",
                        },
                        "ConditionExpression": f"attribute_not_exists({TABLE_SORT_KEY})",
                    }
                }
            ]
        from_hold = {
            "Update": {
                "TableName": self._table.name,
                "Key": self._job_key(job_id),
                "UpdateExpression": "ADD hold_nano :minus",
                "ConditionExpression": "hold_nano >= :e",
                "ExpressionAttributeValues": {":minus": -estimate_nano, ":e": estimate_nano},
            }
        }
        codes = self._transact([*ticket, from_hold])
        if not codes:
            return True
        if ticket and codes[0] == "ConditionalCheckFailed":
            return True  # reserved by an earlier attempt
        job_scope, _ = self.usage(job_id, month)
        values: dict[str, Any] = {":e": estimate_nano}
        fresh: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": self._job_key(job_id),
            "UpdateExpression": "ADD committed_nano :e",
            "ExpressionAttributeValues": values,
        }
        condition = _fits("committed_nano", job_scope.cap_nano, estimate_nano, values, ":room")
        if condition:
            fresh["ConditionExpression"] = condition
        codes = self._transact(
            [*ticket, {"Update": fresh}, self._month_update(month, estimate_nano, estimate_for_cap=estimate_nano)]
        )
        if not codes:
            return True
        return bool(ticket) and codes[0] == "ConditionalCheckFailed"

    def settle(self, job_id: str, month: str, piece: str, actual_nano: int) -> bool:
        """Replace a piece's reservation with what it really cost; once (False when already settled)."""
        ticket = self._table.get_item(Key=self._ticket_key(job_id, piece), ConsistentRead=True).get("Item")
        if ticket is None or ticket.get("state") != "reserved":
            return False
        reserved = int(ticket["reserved_nano"])
        codes = self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table.name,
                        "Key": self._ticket_key(job_id, piece),
                        "UpdateExpression": "SET #state = :settled, actual_nano = :a",
                        "ConditionExpression": "#state = :reserved",
                        "ExpressionAttributeNames": {"#state": "state"},
                        "ExpressionAttributeValues": {
                            ":settled": "settled",
                            ":reserved": "reserved",
                            ":a": actual_nano,
                        },
                    }
                },
                *self.settle_updates(job_id, month, reserved_nano=reserved, actual_nano=actual_nano),
            ]
        )
        return not codes

    def settle_updates(self, job_id: str, month: str, *, reserved_nano: int, actual_nano: int) -> list[dict]:
        """The transaction items that settle a reservation: for callers that write other items with them."""
        delta = actual_nano - reserved_nano
        return [
            {
                "Update": {
                    "TableName": self._table.name,
                    "Key": self._job_key(job_id),
                    "UpdateExpression": "ADD committed_nano :c, spent_nano :s",
                    "ExpressionAttributeValues": {":c": delta, ":s": actual_nano},
                }
            },
            self._month_update(month, delta, actual_nano),
        ]

    def give_back(self, job_id: str, estimate_nano: int) -> None:
        """Return an unused reservation to the job's hold (a call that did not happen this time)."""
        self._table.update_item(
            Key=self._job_key(job_id),
            UpdateExpression="ADD hold_nano :e",
            ExpressionAttributeValues={":e": estimate_nano},
        )

    def month_settle_update(self, month: str, *, reserved_nano: int, actual_nano: int) -> dict:
        """The month's part of a settlement, for a transaction that updates the job item itself."""
        return self._month_update(month, actual_nano - reserved_nano, actual_nano)

    def release_hold(self, job_id: str, month: str) -> int:
        """Give back what a job held for work it will not do (it finished, or stopped); returns the amount."""
        job_scope, _ = self.usage(job_id, month)
        held = job_scope.hold_nano
        if held <= 0:
            return 0
        codes = self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table.name,
                        "Key": self._job_key(job_id),
                        "UpdateExpression": "SET hold_nano = :zero ADD committed_nano :minus",
                        "ConditionExpression": "hold_nano = :held",
                        "ExpressionAttributeValues": {":zero": 0, ":minus": -held, ":held": held},
                    }
                },
                self._month_update(month, -held),
            ]
        )
        return 0 if codes else held

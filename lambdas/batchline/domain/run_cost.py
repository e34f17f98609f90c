"""What a job costs in AWS itself, beside what it costs at the LLM provider.

Each function invocation counts what it uses (its GB-seconds, the requests it makes to S3,
DynamoDB, SQS and Secrets Manager, the state transitions around it) and adds the counts to its
job; Finalize prices them from one table. Users compare this with the LLM bill: the point of the
design is that it stays a rounding error (well under 0.1% of the LLM cost on a large job).

Prices are us-east-1 list prices (on-demand DynamoDB, S3 Standard, standard SQS queue, Standard
Step Functions workflows, x86 Lambda); `AwsPrices` may be overridden for another region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Requests billed as S3 PUT-class (writes and lists) and GET-class (reads).
_S3_WRITES = frozenset(
    {
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "ListObjects",
        "ListObjectsV2",
    }
)
_S3_READS = frozenset({"GetObject", "HeadObject"})
# DynamoDB on-demand bills request units: an item of up to 1 KB written, 4 KB read (strongly
# consistent). batchline's items are small: one unit per item, two for transactional writes.
_DDB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
_DDB_READS = frozenset({"GetItem", "Query", "Scan"})


@dataclass(frozen=True)
class AwsPrices:
    lambda_gb_second: float = 0.0000166667
    lambda_request: float = 0.20 / 1e6
    state_transition: float = 0.025 / 1000
    sqs_request: float = 0.40 / 1e6
    dynamodb_write_unit: float = 0.625 / 1e6
    dynamodb_read_unit: float = 0.125 / 1e6
    s3_write_request: float = 0.005 / 1000
    s3_read_request: float = 0.0004 / 1000
    secrets_manager_call: float = 0.05 / 10_000


@dataclass
class AwsUsage:
    """Counts, all integers so that they can be added atomically to the job's item."""

    lambda_ms_mb: int = 0  # duration in ms times memory in MB: GB-seconds * 1,024,000
    lambda_requests: int = 0
    state_transitions: int = 0
    sqs_requests: int = 0
    dynamodb_write_units: int = 0
    dynamodb_read_units: int = 0
    s3_write_requests: int = 0
    s3_read_requests: int = 0
    secrets_manager_calls: int = 0

    def count_call(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """One API request a function made, by the service's own name for it."""
        if service == "s3":
            if operation in _S3_WRITES:
                self.s3_write_requests += 1
            elif operation in _S3_READS:
                self.s3_read_requests += 1
        elif service == "dynamodb":
            if operation in _DDB_WRITES:
                self.dynamodb_write_units += 1
            elif operation in _DDB_READS:
                self.dynamodb_read_units += 1
            elif operation == "TransactWriteItems":
                self.dynamodb_write_units += 2 * len(params.get("TransactItems", ()))
            elif operation == "BatchWriteItem":
                self.dynamodb_write_units += sum(len(items) for items in params.get("RequestItems", {}).values())
        elif service == "sqs":
            self.sqs_requests += 1
        elif service == "secretsmanager":
            self.secrets_manager_calls += 1

    def requests(self) -> int:
        """The API requests counted so far (every kind)."""
        return (
            self.sqs_requests
            + self.dynamodb_write_units
            + self.dynamodb_read_units
            + self.s3_write_requests
            + self.s3_read_requests
            + self.secrets_manager_calls
        )

    def add(self, other: AwsUsage) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_counters(self, prefix: str = "aws_") -> dict[str, int]:
        return {f"{prefix}{name}": value for name, value in asdict(self).items() if value}

    @classmethod
    def from_counters(cls, item: dict[str, Any], prefix: str = "aws_") -> AwsUsage:
        return cls(**{field.name: int(item.get(f"{prefix}{field.name}", 0)) for field in fields(cls)})

    def split(self, parts: int) -> list[AwsUsage]:
        """Shares of this usage for `parts` jobs (a worker invocation serving several), rounded up."""
        share = {field.name: -(-getattr(self, field.name) // parts) for field in fields(self)}
        return [AwsUsage(**share) for _ in range(parts)]


def aws_cost(usage: AwsUsage, prices: AwsPrices = AwsPrices()) -> dict[str, Any]:
    """The run's AWS cost in US dollars, in total and by service."""
    by_service = {
        "lambda": usage.lambda_ms_mb / 1_024_000 * prices.lambda_gb_second
        + usage.lambda_requests * prices.lambda_request,
        "step_functions": usage.state_transitions * prices.state_transition,
        "sqs": usage.sqs_requests * prices.sqs_request,
        "dynamodb": usage.dynamodb_write_units * prices.dynamodb_write_unit
        + usage.dynamodb_read_units * prices.dynamodb_read_unit,
        "s3": usage.s3_write_requests * prices.s3_write_request + usage.s3_read_requests * prices.s3_read_request,
        "secrets_manager": usage.secrets_manager_calls * prices.secrets_manager_call,
    }
    return {
        "cost_usd": round(sum(by_service.values()), 8),
        "by_service_usd": {name: round(value, 8) for name, value in by_service.items()},
        "usage": {
            "lambda_gb_seconds": round(usage.lambda_ms_mb / 1_024_000, 3),
            **{name: value for name, value in asdict(usage).items() if name != "lambda_ms_mb"},
        },
    }

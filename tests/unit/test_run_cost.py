"""The run's AWS cost: what each request and each GB-second is counted and priced as."""

from __future__ import annotations

import pytest
from batchline.domain.run_cost import AwsPrices, AwsUsage, aws_cost


def test_each_kind_of_request_is_counted_where_aws_bills_it():
    usage = AwsUsage()
    for service, operation, params in [
        ("s3", "PutObject", {}),
        ("s3", "UploadPart", {}),
        ("s3", "GetObject", {}),
        ("s3", "HeadObject", {}),
        ("dynamodb", "UpdateItem", {}),
        ("dynamodb", "GetItem", {}),
        ("dynamodb", "Query", {}),
        ("dynamodb", "TransactWriteItems", {"TransactItems": [{}, {}]}),  # 2 items, 2 units each
        ("dynamodb", "BatchWriteItem", {"RequestItems": {"jobs": [{}, {}, {}]}}),
        ("sqs", "SendMessageBatch", {}),
        ("secretsmanager", "GetSecretValue", {}),
        ("sts", "GetCallerIdentity", {}),  # free: not counted
    ]:
        usage.count_call(service, operation, params)
    assert usage == AwsUsage(
        sqs_requests=1,
        dynamodb_write_units=1 + 4 + 3,
        dynamodb_read_units=2,
        s3_write_requests=2,
        s3_read_requests=2,
        secrets_manager_calls=1,
    )


def test_the_cost_is_priced_from_one_table_and_adds_up():
    usage = AwsUsage(lambda_ms_mb=1_024_000 * 10, lambda_requests=1_000_000, state_transitions=1000)
    cost = aws_cost(usage)
    assert cost["by_service_usd"]["lambda"] == pytest.approx(10 * 0.0000166667 + 0.20)
    assert cost["by_service_usd"]["step_functions"] == pytest.approx(0.025)
    assert cost["cost_usd"] == pytest.approx(sum(cost["by_service_usd"].values()))
    assert cost["usage"]["lambda_gb_seconds"] == 10.0
    cheaper = aws_cost(usage, AwsPrices(state_transition=0.0))
    assert cheaper["by_service_usd"]["step_functions"] == 0


def test_counts_round_trip_through_the_job_item_and_split_among_jobs():
    usage = AwsUsage(lambda_ms_mb=7, sqs_requests=3)
    assert AwsUsage.from_counters(usage.as_counters()) == usage
    shares = usage.split(2)
    assert [share.sqs_requests for share in shares] == [2, 2]  # rounded up: never under-counted

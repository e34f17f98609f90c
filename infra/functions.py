"""The Lambda functions, each with a role of its own.

``JobFunctions`` holds one function per entry of ``batchline.topology.FUNCTIONS`` (the ones the
state machine calls); the hot path's worker is built by ``batchline_function`` too. Every function
is traced with X-Ray. The roles start empty but for writing their own log group and sending traces;
the stack grants each one what its handler uses, so a function can never do more than its code needs.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, Duration, Size, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from batchline.settings import FunctionSizing
from batchline.topology import FUNCTIONS
from constructs import Construct

CODE_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/.ruff_cache", "**/.DS_Store"]
# CloudWatch Logs' periods by their length in days (settings give days; CDK wants the enum).
_RETENTION_BY_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def log_retention(days: int) -> logs.RetentionDays:
    """The enum for a period settings already checked is one CloudWatch accepts."""
    return _RETENTION_BY_DAYS[days]


def construct_name(function_name: str) -> str:
    """The id stem of a function's constructs: shard_failed -> ShardFailed."""
    return "".join(part.capitalize() for part in function_name.split("_"))


def function_code(code_dir: str) -> lambda_.Code:
    """The lambdas/ package as one asset, shared by every function."""
    return lambda_.Code.from_asset(code_dir, exclude=CODE_EXCLUDES)


def batchline_function(
    scope: Construct,
    *,
    name: str,
    handler: str,
    description: str,
    code: lambda_.Code,
    layer: lambda_.ILayerVersion,
    environment: Mapping[str, str],
    memory_mb: int,
    timeout: Duration,
    log_days: int,
    ephemeral_storage_mb: int | None = None,
    reserved_concurrency: int | None = None,
) -> lambda_.Function:
    """A function with its own role and log group, on the runtime the layer is built for."""
    stem = construct_name(name)
    role = iam.Role(
        scope,
        f"{stem}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"batchline {name} function: only what its handler uses",
    )
    log_group = logs.LogGroup(scope, f"{stem}Logs", retention=log_retention(log_days))
    log_group.grant_write(role)
    function = lambda_.Function(
        scope,
        f"{stem}Function",
        description=description,
        runtime=lambda_.Runtime.PYTHON_3_12,
        architecture=lambda_.Architecture.X86_64,
        handler=handler,
        code=code,
        layers=[layer],
        memory_size=memory_mb,
        timeout=timeout,
        ephemeral_storage_size=Size.mebibytes(ephemeral_storage_mb) if ephemeral_storage_mb else None,
        reserved_concurrent_executions=reserved_concurrency,
        environment=dict(environment),
        role=role,
        log_group=log_group,
        # CDK grants the role xray:PutTraceSegments and xray:PutTelemetryRecords for this.
        tracing=lambda_.Tracing.ACTIVE,
    )
    Validations.of(function).acknowledge(
        Acknowledgment(
            id="AwsSolutions-L1",
            reason="Pinned to Python 3.12 on purpose: the dependency layer is built from cp312 "
            "manylinux wheels (pip --python-version 3.12), so the runtime moves only together "
            "with the layer and a test run, not whenever a newer runtime appears.",
        )
    )
    Validations.of(role).acknowledge(
        Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="Added by CDK for X-Ray active tracing (xray:PutTraceSegments, xray:PutTelemetryRecords): "
            "these actions support no resource-level permissions, so '*' is the only valid resource. "
            "tests/infrastructure checks that no other action on this role has a wildcard resource.",
        )
    )
    return function


class JobFunctions(Construct):
    """The functions the state machine calls: plan, submit, check, enqueue, realtime_progress, finalize."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
        sizing: FunctionSizing,
        environment: Mapping[str, str],
        log_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.functions: dict[str, lambda_.Function] = {
            spec.name: batchline_function(
                self,
                name=spec.name,
                handler=spec.handler,
                description=spec.description,
                code=code,
                layer=layer,
                environment=environment,
                memory_mb=sizing.memory_mb,
                timeout=Duration.seconds(sizing.timeout_seconds),
                ephemeral_storage_mb=sizing.ephemeral_storage_mb,
                log_days=log_days,
            )
            for spec in FUNCTIONS
        }

    def role(self, name: str) -> iam.IRole:
        role = self.functions[name].role
        assert role is not None
        return role

"""One Lambda function per entry of ``batchline.topology.FUNCTIONS``, each with a role of its own.

The roles start empty but for writing their own log group; the stack grants each one what its
handler uses, so a function can never do more than its code needs.
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
LOG_RETENTION = logs.RetentionDays.ONE_MONTH


def construct_name(function_name: str) -> str:
    """The id stem of a function's constructs: shard_failed -> ShardFailed."""
    return "".join(part.capitalize() for part in function_name.split("_"))


class ColdPathFunctions(Construct):
    """The functions the state machine calls: plan, submit, check, collect, shard_failed, finalize."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: str,
        layer: lambda_.ILayerVersion,
        sizing: FunctionSizing,
        environment: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        code = lambda_.Code.from_asset(code_dir, exclude=CODE_EXCLUDES)
        self.functions: dict[str, lambda_.Function] = {}
        for spec in FUNCTIONS:
            stem = construct_name(spec.name)
            role = iam.Role(
                self,
                f"{stem}Role",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"batchline {spec.name} function: only what its handler uses",
            )
            log_group = logs.LogGroup(self, f"{stem}Logs", retention=LOG_RETENTION)
            log_group.grant_write(role)
            function = lambda_.Function(
                self,
                f"{stem}Function",
                description=spec.description,
                runtime=lambda_.Runtime.PYTHON_3_12,
                architecture=lambda_.Architecture.X86_64,
                handler=spec.handler,
                code=code,
                layers=[layer],
                memory_size=sizing.memory_mb,
                timeout=Duration.seconds(sizing.timeout_seconds),
                ephemeral_storage_size=Size.mebibytes(sizing.ephemeral_storage_mb),
                environment=dict(environment),
                role=role,
                log_group=log_group,
            )
            Validations.of(function).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-L1",
                    reason="Pinned to Python 3.12 on purpose: the dependency layer is built from cp312 "
                    "manylinux wheels (pip --python-version 3.12), so the runtime moves only together "
                    "with the layer and a test run, not whenever a newer runtime appears.",
                )
            )
            self.functions[spec.name] = function

    def role(self, name: str) -> iam.IRole:
        role = self.functions[name].role
        assert role is not None
        return role

"""A job's control flow: a new input object -> EventBridge rule -> the state machine.

The state machine plans the input, then takes the batch route (one OpenAI batch per shard) or the
realtime route (enqueue every request for the hot path's worker, wait until each has an outcome),
and finalizes.

It is the ASL file (``topology.STATE_MACHINE_ASL``) as it is, its ``${...}`` placeholders filled by
``topology.asl_substitutions``; the trigger's pattern and input come from ``topology`` too, so the
deployed flow and the local run are built from the same data.

What the execution log holds: every event (level ALL) and none of the execution data. A state's
input and output carry a job's working values, including a failed step's error text, which may
quote a line of the input (a prompt, a custom_id) or a provider's answer; with
``include_execution_data`` off, Step Functions writes each event's type, state, timestamps and
execution ARN and leaves the inputs and outputs out. ALL rather than ERROR because, the data gone,
an event costs a few hundred bytes and a job writes a handful per poll (at most one poll a
``poll_seconds``), while the log then shows where a job is and how long each step took, for as long
as ``retention.log_days`` keeps it: ERROR would show only that a job failed, not what it was doing.
The data itself stays in the execution history, readable by those allowed ``states:GetExecutionHistory``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, ArnFormat, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from batchline.topology import (
    EXECUTION_INPUT_PATHS,
    STATE_MACHINE_ASL,
    asl_substitutions,
    execution_input_template,
    object_created_pattern,
)
from constructs import Construct

from infra.functions import log_retention


class ExecutionInput(events.RuleTargetInput):
    """Topology's InputTransformer, verbatim.

    ``RuleTargetInput.from_object`` would rename the placeholders after their paths and leave them
    unquoted, and ``from_text`` would wrap the whole template in a JSON string; this keeps the exact
    paths and template that the local run (moto) uses.
    """

    def __init__(self, *, poll_seconds: int) -> None:
        super().__init__()
        self._template = execution_input_template(poll_seconds)

    def bind(self, rule: events.IRule) -> events.RuleTargetInputProperties:
        return events.RuleTargetInputProperties(
            input_paths_map=dict(EXECUTION_INPUT_PATHS), input_template=self._template
        )


def event_pattern(pattern: Mapping) -> events.EventPattern:
    """An EventBridge pattern written as JSON ("detail-type") as the L2 struct (detail_type)."""
    return events.EventPattern(**{key.replace("-", "_"): value for key, value in pattern.items()})


class JobOrchestration(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        input_bucket: s3.IBucket,
        map_max_concurrency: int,
        poll_seconds: int,
        log_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        # The vendedlogs prefix keeps Step Functions' log delivery out of the account's size-capped
        # CloudWatch Logs resource policy.
        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"/aws/vendedlogs/states/{Stack.of(self).stack_name}-jobs",
            retention=log_retention(log_days),
        )
        function_arns = {name: function.function_arn for name, function in functions.items()}
        stack = Stack.of(self)
        # Named, so that its role can name it: HandOver starts a new execution of this very state
        # machine when a job outlives one execution's history (a generated name would be circular).
        machine_name = f"{stack.stack_name}-jobs"
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=machine_name,
            comment="batchline job: plan, then one OpenAI batch per shard polled by one loop, or every request via "
            "the realtime queue, then finalize",
            definition_body=sfn.DefinitionBody.from_file(str(STATE_MACHINE_ASL)),
            definition_substitutions=asl_substitutions(function_arns, map_max_concurrency),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            tracing_enabled=True,
        )
        # The ASL's Task states name the functions' unqualified ARNs: exactly these, no versions or aliases.
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=list(function_arns.values()))
        )
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"],
                resources=[
                    stack.format_arn(
                        service="states",
                        resource="stateMachine",
                        resource_name=machine_name,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        # On the execution role alone, so that a wildcard anywhere else (the trigger's role) still fails synth.
        Validations.of(self.state_machine.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="Added by CDK for X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords, "
                "GetSamplingRules, GetSamplingTargets) and for log delivery to CloudWatch Logs "
                "(logs:CreateLogDelivery and related): none of these actions supports resource-level "
                "permissions, so '*' is the only valid resource.",
            )
        )

        self.trigger = events.Rule(
            self,
            "InputObjectCreated",
            description="A new object in the input bucket starts a batchline job.",
            event_pattern=event_pattern(object_created_pattern(input_bucket.bucket_name)),
        )
        self.trigger.add_target(
            targets.SfnStateMachine(self.state_machine, input=ExecutionInput(poll_seconds=poll_seconds))
        )

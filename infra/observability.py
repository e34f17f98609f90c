"""A first look at jobs and the realtime queue: one dashboard, and alarms sent to an SNS topic.

Deliberately small; subscribe to the topic (email, chat) to be told when a job fails or a realtime
request lands in the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from batchline.topology import METRICS_NAMESPACE
from constructs import Construct

PERIOD = Duration.minutes(5)
ROUTES = ("batch", "realtime")


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        state_machine: sfn.IStateMachine,
        functions: Mapping[str, lambda_.IFunction],
        worker: lambda_.IFunction,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(self, "AlarmTopic", display_name="batchline alarms", enforce_ssl=True)
        notify = cloudwatch_actions.SnsAction(self.alarm_topic)

        failed = state_machine.metric_failed(period=PERIOD, statistic="Sum", label="failed")
        self.failed_jobs_alarm = cloudwatch.Alarm(
            self,
            "FailedJobs",
            alarm_description="A batchline job failed: its summary.json and errors.jsonl in the output "
            "bucket, and the execution's history, say why.",
            metric=failed,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.failed_jobs_alarm.add_alarm_action(notify)

        dead_letters = dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=PERIOD, statistic="Maximum", label="dead letters"
        )
        self.dead_letters_alarm = cloudwatch.Alarm(
            self,
            "DeadLetters",
            alarm_description="A realtime request failed every delivery and waits in the dead-letter queue "
            "(DeadLetterQueueUrl): its job reports it as an error once it stops waiting. Look at the "
            "worker's logs, fix the cause, then redrive the messages or delete them.",
            metric=dead_letters,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.dead_letters_alarm.add_alarm_action(notify)

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{Stack.of(self).stack_name}-jobs",
            default_interval=Duration.days(1),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Jobs (state machine executions)",
                left=[
                    state_machine.metric_started(period=PERIOD, statistic="Sum", label="started"),
                    state_machine.metric_succeeded(period=PERIOD, statistic="Sum", label="succeeded"),
                    failed,
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Function errors",
                left=[
                    function.metric_errors(period=PERIOD, statistic="Sum", label=name)
                    for name, function in functions.items()
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Job table throttles",
                left=[
                    table.metric(name, period=PERIOD, statistic="Sum", label=label)
                    for name, label in (("ReadThrottleEvents", "reads"), ("WriteThrottleEvents", "writes"))
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Realtime queue",
                left=[
                    queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label="waiting"
                    ),
                    dead_letters,
                ],
                right=[
                    queue.metric_approximate_age_of_oldest_message(
                        period=PERIOD, statistic="Maximum", label="oldest (s)"
                    )
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Realtime worker",
                left=[
                    worker.metric_errors(period=PERIOD, statistic="Sum", label="errors"),
                    worker.metric_throttles(period=PERIOD, statistic="Sum", label="throttles"),
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(*self._job_widgets())
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=[self.failed_jobs_alarm, self.dead_letters_alarm], width=24
            ),
        )

    @staticmethod
    def _job_widgets() -> list[cloudwatch.GraphWidget]:
        """What Finalize publishes for every job, per route: outcomes, requests, tokens and spend."""

        def per_route(name: str, statistic: str = "Sum") -> list[cloudwatch.Metric]:
            return [
                cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name=name,
                    dimensions_map={"service": "batchline", "route": route},
                    period=PERIOD,
                    statistic=statistic,
                    label=f"{name} ({route})",
                )
                for route in ROUTES
            ]

        return [
            cloudwatch.GraphWidget(
                title="Jobs by outcome",
                left=[
                    m for name in ("JobsSucceeded", "JobsCompletedWithErrors", "JobsFailed") for m in per_route(name)
                ],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Requests done and failed, per route",
                left=[m for name in ("RequestsSucceeded", "RequestsFailed", "InvalidLines") for m in per_route(name)],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Tokens in and out, per route",
                left=[m for name in ("InputTokens", "OutputTokens") for m in per_route(name)],
                width=6,
            ),
            cloudwatch.GraphWidget(title="Spend (USD), per route", left=per_route("CostUSD"), width=6),
        ]

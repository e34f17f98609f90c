"""What an operator watches: one dashboard and the alarms, sent to one SNS topic.

The dashboard answers "how far along is it, what has it cost, is anything stuck": executions and
function errors, the realtime queue and its worker, what Finalize publishes per job and route,
spend against the monthly budget, the 429 share of realtime calls, and the batches in flight by
status and age. The alarms fire when a job fails, a realtime request lands in the dead-letter
queue, a job passes a budget threshold, or a batch is declared stuck; subscribe to the topic
(email, chat) to hear of them.

Custom metric names come from ``batchline.topology``, the module the functions publish them from,
so the dashboard and the alarms cannot drift from what is published.
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
from batchline.topology import (
    BATCH_AGE_METRIC,
    BATCH_STATUSES_WATCHED,
    BATCHES_RESUBMITTED_METRIC,
    BATCHES_STUCK_METRIC,
    BATCHES_SUBMITTED_METRIC,
    BUDGET_FALLBACK_METRIC,
    BUDGET_STOP_METRIC,
    JOB_METRICS,
    JOBS_REFUSED_METRIC,
    JOBS_RESUMED_METRIC,
    METRICS_NAMESPACE,
    MONTHLY_BUDGET_METRIC,
    MONTHLY_SPEND_METRIC,
    PROVIDER_CALLS_METRIC,
    PROVIDER_RATE_LIMITED_METRIC,
    REALTIME_BACKLOG_METRIC,
    REQUESTS_ENQUEUED_METRIC,
    SHARDS_FAILED_METRIC,
)
from constructs import Construct

from infra.constants import SERVICE_NAME
from infra.encryption import DataKey

PERIOD = Duration.minutes(5)
ROUTES = ("batch", "realtime")


def custom_metric(name: str, statistic: str, label: str, **dimensions: str) -> cloudwatch.Metric:
    """A metric the functions publish (Powertools Metrics: dimension service, plus any given)."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE_NAME, **dimensions},
        period=PERIOD,
        statistic=statistic,
        label=label,
    )


def per_route(name: str, statistic: str = "Sum") -> list[cloudwatch.Metric]:
    """What Finalize publishes for every job, once per route."""
    return [custom_metric(name, statistic, f"{name} ({route})", route=route) for route in ROUTES]


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
        key: DataKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(
            self, "AlarmTopic", display_name="batchline alarms", enforce_ssl=True, master_key=key.key
        )
        # CloudWatch publishes an alarm to the topic itself, not through a role: the key policy must let it.
        key.allow_service(
            "cloudwatch.amazonaws.com",
            ["kms:Decrypt", "kms:GenerateDataKey*"],
            sid="CloudWatchAlarmsPublishToTheAlarmTopic",
            why="CloudWatch alarms publish to the encrypted alarm topic",
        )

        failed = state_machine.metric_failed(period=PERIOD, statistic="Sum", label="failed")
        # Maximum: one dead letter for one moment is enough.
        dead_letters = dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=PERIOD, statistic="Maximum", label="dead letters"
        )
        stuck = custom_metric(BATCHES_STUCK_METRIC, "Sum", "stuck (cancelled)")
        self.failed_jobs_alarm = self._alarm(
            "FailedJobs",
            failed,
            "A batchline job failed: its summary.json and errors.jsonl in the output bucket, and the "
            "execution's history, say why.",
        )
        self.dead_letters_alarm = self._alarm(
            "DeadLetters",
            dead_letters,
            "A realtime request failed every delivery and waits in the dead-letter queue "
            "(DeadLetterQueueUrl): its job reports it as an error once it stops waiting. Look at the "
            "worker's logs, fix the cause, then redrive the messages or delete them.",
        )
        raise_budget = (
            "raise the budget (the upload's batchline-budget-usd metadata, or budget.* in cdk.json's "
            "batchline settings, then redeploy)"
        )
        self.budget_fallback_alarm = self._alarm(
            "BudgetFallback",
            custom_metric(BUDGET_FALLBACK_METRIC, "Sum", "fallback engaged"),
            "A job passed its first budget threshold: its remaining requests go to the cheaper fallback "
            "models (budget.fallback_models), so some answers come from another model than the input "
            "named. Check 'Spend this month against the budget' on the dashboard; if the spend is "
            f"expected, {raise_budget} before the next jobs.",
        )
        self.budget_stop_alarm = self._alarm(
            "BudgetStop",
            custom_metric(BUDGET_STOP_METRIC, "Sum", "stop engaged"),
            "A job passed its second budget threshold and paused: nothing more of it is sent to OpenAI. "
            "Check 'Spend this month against the budget' on the dashboard. To finish the job, "
            f"{raise_budget} and upload the same file again; otherwise leave it paused.",
        )
        self.stuck_batches_alarm = self._alarm(
            "StuckBatch",
            stuck,
            "An OpenAI batch stayed validating or finalizing past recovery.stuck_after_seconds, so it was "
            "cancelled and its unanswered requests resubmitted: the job goes on, but later. If this "
            "repeats, check OpenAI's status page; the shard's item in the job table holds the batch id.",
        )
        self.alarms = [
            self.failed_jobs_alarm,
            self.dead_letters_alarm,
            self.budget_fallback_alarm,
            self.budget_stop_alarm,
            self.stuck_batches_alarm,
        ]
        notify = cloudwatch_actions.SnsAction(self.alarm_topic)
        for alarm in self.alarms:
            alarm.add_alarm_action(notify)

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
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Realtime worker",
                left=[
                    worker.metric_errors(period=PERIOD, statistic="Sum", label="errors"),
                    worker.metric_throttles(period=PERIOD, statistic="Sum", label="throttles"),
                ],
                width=8,
            ),
            self._rate_limited_share_widget(),
        )
        self.dashboard.add_widgets(*self._job_widgets())
        self.dashboard.add_widgets(*self._batch_widgets(stuck))
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24))

    def _alarm(self, construct_id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        """At least 1 in one period; no data (nothing published) is fine."""
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    @staticmethod
    def _rate_limited_share_widget() -> cloudwatch.GraphWidget:
        """The worker's realtime calls answered 429, as a share: lasting above zero, the configured rate limits
        are above the provider's."""
        share = cloudwatch.MathExpression(
            expression="100 * rate_limited / calls",
            using_metrics={
                "rate_limited": custom_metric(PROVIDER_RATE_LIMITED_METRIC, "Sum", "answered 429"),
                "calls": custom_metric(PROVIDER_CALLS_METRIC, "Sum", "calls"),
            },
            label="429 share (%)",
            period=PERIOD,
        )
        return cloudwatch.GraphWidget(
            title="Realtime calls answered 429 (%)",
            left=[share],
            left_y_axis=cloudwatch.YAxisProps(min=0, max=100, show_units=False),
            width=8,
        )

    @staticmethod
    def _job_widgets() -> list[cloudwatch.GraphWidget]:
        """What Finalize publishes for every job, per route, and the month's spend against its cap.

        Grouped from ``JOB_METRICS`` by name, so that a figure Finalize starts publishing is graphed too.
        """
        outcomes = [name for name in JOB_METRICS if name.startswith("Jobs")]
        tokens = [name for name in JOB_METRICS if name.endswith("Tokens")]
        spend = [name for name in JOB_METRICS if name.endswith("USD")]
        requests = [name for name in JOB_METRICS if name not in {*outcomes, *tokens, *spend}]
        return [
            cloudwatch.GraphWidget(
                title="Jobs by outcome", left=[m for name in outcomes for m in per_route(name)], width=5
            ),
            cloudwatch.GraphWidget(
                title="Requests done and failed, per route",
                left=[m for name in requests for m in per_route(name)],
                width=5,
            ),
            cloudwatch.GraphWidget(
                title="Tokens in and out, per route", left=[m for name in tokens for m in per_route(name)], width=5
            ),
            cloudwatch.GraphWidget(
                title="Spend (USD), per route", left=[m for name in spend for m in per_route(name)], width=4
            ),
            cloudwatch.GraphWidget(
                title="Spend this month against the budget (USD)",
                left=[
                    custom_metric(MONTHLY_SPEND_METRIC, "Maximum", "spent this month"),
                    custom_metric(MONTHLY_BUDGET_METRIC, "Maximum", "monthly budget"),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                width=5,
            ),
        ]

    @staticmethod
    def _batch_widgets(stuck: cloudwatch.Metric) -> list[cloudwatch.GraphWidget]:
        """OpenAI batches in flight, from Check's polls: how many in each status, how old, and the stuck ones."""
        return [
            cloudwatch.GraphWidget(
                title="Oldest batch by status (s)",
                left=[
                    custom_metric(BATCH_AGE_METRIC, "Maximum", status, status=status)
                    for status in BATCH_STATUSES_WATCHED
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Batches polled, by status (polls per 5 minutes)",
                left=[
                    custom_metric(BATCH_AGE_METRIC, "SampleCount", status, status=status)
                    for status in BATCH_STATUSES_WATCHED
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Batches stuck and resubmitted",
                left=[stuck, custom_metric(BATCHES_RESUBMITTED_METRIC, "Sum", "resubmitted")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Batches submitted, shards failed, jobs resumed and refused by the budget",
                left=[
                    custom_metric(BATCHES_SUBMITTED_METRIC, "Sum", "batches submitted"),
                    custom_metric(SHARDS_FAILED_METRIC, "Sum", "shards failed"),
                    custom_metric(JOBS_RESUMED_METRIC, "Sum", "jobs resumed"),
                    custom_metric(JOBS_REFUSED_METRIC, "Sum", "jobs refused by the budget"),
                    custom_metric(BUDGET_FALLBACK_METRIC, "Sum", "budget: fallback model engaged"),
                    custom_metric(BUDGET_STOP_METRIC, "Sum", "budget: stopped (job paused)"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Realtime: requests queued, and sent but not yet answered",
                left=[
                    custom_metric(REQUESTS_ENQUEUED_METRIC, "Sum", "queued"),
                    custom_metric(REALTIME_BACKLOG_METRIC, "Maximum", "without an outcome yet"),
                ],
                width=12,
            ),
        ]

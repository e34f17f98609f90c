"""How the pieces connect, as data that the CDK stack and the local run both build from.

The functions and their handlers, the table's key schema, the object-created trigger and the
state machine's substitutions are declared once here, so the deployed system and the local one
cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The ASL lives under statemachine/ in the checkout; an installed wheel carries it beside this module.
_CHECKOUT_ASL = Path(__file__).resolve().parents[2] / "statemachine" / "job.asl.json"
_PACKAGED_ASL = Path(__file__).resolve().parent / "statemachine" / "job.asl.json"
STATE_MACHINE_ASL = _CHECKOUT_ASL if _CHECKOUT_ASL.is_file() else _PACKAGED_ASL

SERVICE_NAME = "batchline"  # Powertools' service: the "service" dimension of every metric, and the logs' service
METRICS_NAMESPACE = "Batchline"  # CloudWatch namespace of the functions' metrics and the dashboard's
JOB_METRICS = (  # published by Finalize for every job, with the dimension "route"
    "JobsSucceeded",
    "JobsCompletedWithErrors",
    "JobsFailed",
    "JobsPaused",
    "JobsCancelled",
    "RequestsSucceeded",
    "RequestsFailed",
    "InvalidLines",
    "InputTokens",
    "OutputTokens",
    "CostUSD",
)

# Published while jobs run, with the dimension "service" only (names shared with the dashboard and alarms):
BATCH_AGE_METRIC = "BatchAgeSeconds"  # by Check at every poll, with the extra dimension "status"
BATCH_STATUSES_WATCHED = ("validating", "in_progress", "finalizing", "cancelling")
BATCHES_STUCK_METRIC = "BatchesStuck"  # by Check, 1 when a batch is declared stuck and cancelled
BATCHES_RESUBMITTED_METRIC = "BatchesResubmitted"  # by CheckShards: token_limit_exceeded, expiry, retries
BUDGET_FALLBACK_METRIC = "BudgetFallbackEngaged"  # 1 when a job passes its first budget threshold
BUDGET_STOP_METRIC = "BudgetStopEngaged"  # 1 when a job passes its second threshold and pauses
MONTHLY_SPEND_METRIC = "MonthlySpendUSD"  # by Finalize: the month's settled spend so far
MONTHLY_BUDGET_METRIC = "MonthlyBudgetUSD"  # by Finalize: the month's cap (absent when there is none)
PROVIDER_CALLS_METRIC = "ProviderCalls"  # by the worker: realtime calls made
PROVIDER_RATE_LIMITED_METRIC = "ProviderRateLimited"  # by the worker: calls answered 429
JOBS_RESUMED_METRIC = "JobsResumed"  # by Plan: the same file again, picked up where it stopped
JOBS_REFUSED_METRIC = "JobsRefusedByBudget"  # by Plan: the estimate did not fit; nothing was sent
BATCHES_SUBMITTED_METRIC = "BatchesSubmitted"  # by Submit: batches created
SHARDS_FAILED_METRIC = "ShardsFailed"  # by SubmitShards/CheckShards: shards that could not run
REQUESTS_ENQUEUED_METRIC = "RequestsEnqueued"  # by Enqueue: requests queued for the realtime workers
REALTIME_BACKLOG_METRIC = "RealtimeBacklog"  # by RealtimeProgress: requests sent realtime still without an outcome

# Step Functions bills each state transition. Around one invocation of each function the job
# passes through the Task's state and the Choice (or Wait) after it, and then into the state that
# its answer chooses, unless that is the next function's own Task (statemachine/job.asl.json).
_TRANSITIONS_BEFORE_CHOICE = {
    "plan": 2,  # Plan, ChooseRoute (then SubmitShards or Finalize, counted by them)
    "submit": 2,  # SubmitShards, WaitForBatches
    "check": 2,  # CheckShards, AllShardsDone
    "enqueue": 1,  # an iteration of EnqueueShards
    "realtime_progress": 2,  # CheckRealtime, IsRealtimeDone
    "finalize": 3,  # Finalize, DidJobFail, JobDone or JobFailed
}


def state_transitions(function: str, answer: dict | None) -> int:
    """The state transitions one invocation of `function` accounts for, given its answer."""
    count = _TRANSITIONS_BEFORE_CHOICE.get(function, 0)
    answer = answer if isinstance(answer, dict) else {}
    if function == "plan" and answer.get("route") == "realtime":
        count += 1  # the EnqueueShards Map (CheckRealtime after it is counted by its own invocation)
    elif function == "check" and not answer.get("finished"):
        count += 1  # WaitForBatches; or HandOver
    elif function == "realtime_progress":
        # A local run checks more often than the deployed loop: it bills the polls that loop would make.
        polls = int(answer.get("billed_polls", 1))
        count = polls * (count + (0 if answer.get("finished") else 1))
    return count


TABLE_PARTITION_KEY = "pk"
TABLE_SORT_KEY = "sk"


# The jobs by start time, newest first, for `batchline status`: a global secondary index whose key
# only job items carry (shards, tickets and outcomes are never in it), so listing the latest jobs
# reads those jobs and nothing else, however large the table grows.
JOBS_BY_START_INDEX = "jobs-by-start"
JOB_LIST_ATTRIBUTE = "job_list"  # its partition key: one value, on every job item
JOB_LIST_VALUE = "job"
JOB_START_ATTRIBUTE = "started_at"  # its sort key: when the job was (last) planned, ISO 8601


def job_table_definition(table_name: str) -> dict:
    """CreateTable arguments for the job table: what the local run and the tests create."""
    return {
        "TableName": table_name,
        "KeySchema": [
            {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
            {"AttributeName": JOB_LIST_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": JOB_START_ATTRIBUTE, "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": JOBS_BY_START_INDEX,
                "KeySchema": [
                    {"AttributeName": JOB_LIST_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": JOB_START_ATTRIBUTE, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # short name; the stack prefixes it
    handler: str  # "module.function" inside the lambdas/ package root
    substitution: str  # the ASL placeholder that receives its ARN
    description: str


@dataclass(frozen=True)
class WorkerSpec:
    """The SQS-fed function of the hot path: not called by the state machine, but by its queue."""

    name: str
    handler: str
    description: str


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        "plan",
        "batchline.handlers.plan.handler",
        "PlanFunctionArn",
        "Validates the input file, counts tokens and cuts it into shards.",
    ),
    FunctionSpec(
        "submit",
        "batchline.handlers.submit.handler",
        "SubmitFunctionArn",
        "Uploads a job's shards and creates their OpenAI batches, as far as limits allow.",
    ),
    FunctionSpec(
        "check",
        "batchline.handlers.check.handler",
        "CheckFunctionArn",
        "Polls a job's batches, collects those that ended and submits what is due.",
    ),
    FunctionSpec(
        "enqueue",
        "batchline.handlers.enqueue.handler",
        "EnqueueFunctionArn",
        "Puts one shard's requests on the realtime queue.",
    ),
    FunctionSpec(
        "realtime_progress",
        "batchline.handlers.realtime_progress.handler",
        "RealtimeProgressFunctionArn",
        "Counts a realtime job's requests that have an outcome.",
    ),
    FunctionSpec(
        "finalize",
        "batchline.handlers.finalize.handler",
        "FinalizeFunctionArn",
        "Writes results.jsonl, errors.jsonl and summary.json for the job.",
    ),
)

WORKER = WorkerSpec(
    "worker",
    "batchline.handlers.worker.handler",
    "Calls the realtime API for queued requests at the shared rate limit.",
)

MAP_CONCURRENCY_SUBSTITUTION = "MapMaxConcurrency"


def asl_substitutions(function_arns: dict[str, str], map_max_concurrency: int) -> dict[str, str]:
    """Every placeholder of the ASL file and its value; keys must equal the file's placeholders."""
    values = {spec.substitution: function_arns[spec.name] for spec in FUNCTIONS}
    values[MAP_CONCURRENCY_SUBSTITUTION] = str(map_max_concurrency)
    return values


def render_asl(substitutions: dict[str, str]) -> str:
    """The ASL with its placeholders replaced, exactly as Step Functions' DefinitionSubstitutions do."""
    text = STATE_MACHINE_ASL.read_text()
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    return text


def object_created_pattern(input_bucket: str) -> dict:
    """EventBridge pattern: a new object in the input bucket starts a job, unless it is a table job's
    spec (under SPEC_PREFIX's first part: the table it goes with starts the job)."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [input_bucket]},
            "object": {"key": [{"anything-but": {"prefix": "_batchline/"}}]},
        },
    }


EXECUTION_INPUT_PATHS = {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}


def execution_input_template(poll_seconds: int) -> str:
    """The state machine input the trigger builds from the S3 event (EventBridge InputTemplate).

    The placeholders sit inside quotes: EventBridge then inserts the string as it is, and moto,
    which never adds quotes, produces the same JSON.
    """
    return '{"bucket": "<bucket>", "key": "<key>", "poll_seconds": ' + json.dumps(poll_seconds) + "}"

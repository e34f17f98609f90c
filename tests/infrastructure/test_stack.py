"""The synthesized stack is what the design promises: private storage, one least-privilege role per
function, the state machine and trigger built from topology, the realtime queue and its worker built
from the realtime settings, the secret, tracing, the dashboard and alarms built from topology's
metric names, cdk-nag clean.

The app is built once for the module (jsii start-up is slow) with bundling skipped, and once more
with realtime settings unlike the defaults, so that a value read from settings cannot pass for a
hard-coded one; `make synth` builds the layer for real.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template
from batchline import topology
from batchline.domain.layout import STAGING_PREFIX, JobLayout
from batchline.settings import Settings, SettingsError, load_settings, settings_from_cdk_json
from batchline.topology import (
    BATCH_AGE_METRIC,
    BATCH_STATUSES_WATCHED,
    BATCHES_RESUBMITTED_METRIC,
    BATCHES_STUCK_METRIC,
    BATCHES_SUBMITTED_METRIC,
    BUDGET_FALLBACK_METRIC,
    BUDGET_STOP_METRIC,
    EXECUTION_INPUT_PATHS,
    FUNCTIONS,
    JOB_METRICS,
    JOBS_BY_START_INDEX,
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
    STATE_MACHINE_ASL,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    WORKER,
    execution_input_template,
    job_table_definition,
    object_created_pattern,
)
from cdk_nag import AwsSolutionsChecks

from app import build_app
from infra.constants import (
    PYPROJECT,
    REALTIME_BODIES,
    REALTIME_MERGED,
    REALTIME_OUTCOMES,
    SHARD_FILES,
    STACK_ID,
    TABLE_TTL_ATTRIBUTE,
)
from infra.lambda_layer import LayerBuildError, runtime_requirements, verified_encodings

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"
NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
HANDLERS = {spec.handler: spec.name for spec in (*FUNCTIONS, WORKER)}
# Every realtime value unlike its default (and the cold path's sizing), as an operator might tune them.
TUNED_REALTIME = {
    "batch_size": 7,
    "max_concurrency": 3,
    "reserved_concurrency": 6,
    "max_receive_count": 9,
    "worker_timeout_seconds": 200,
}


TUNED_RETENTION = {
    "staging_days": 30,
    "log_days": 90,
    "dead_letter_days": 7,
    "noncurrent_days": 45,
    "input_days": 60,
    "incomplete_upload_days": 3,
}


def cdk_context(**batchline: object) -> dict:
    context = json.loads(CDK_JSON.read_text())["context"]
    return {**context, "batchline": {**context["batchline"], **batchline}, **NO_BUNDLING}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return settings_from_cdk_json(CDK_JSON)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    return build_app(cdk_context(), outdir=str(tmp_path_factory.mktemp("cdk.out")))


@pytest.fixture(scope="module")
def template(app: App) -> Template:
    return Template.from_stack(app.node.find_child(STACK_ID))


@pytest.fixture(scope="module")
def resources(template: Template) -> dict:
    return template.to_json()["Resources"]


@pytest.fixture(scope="module")
def tuned(app: App, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Template]:
    """The stack built with TUNED_REALTIME (after `app`: jsii is then already running)."""
    context = cdk_context(realtime=TUNED_REALTIME, retention=TUNED_RETENTION)
    tuned_app = build_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out.tuned")))
    return load_settings(context["batchline"]), Template.from_stack(tuned_app.node.find_child(STACK_ID))


@pytest.fixture(scope="module", params=["cdk.json", "tuned"])
def deployed(request: pytest.FixtureRequest, settings: Settings, template: Template) -> tuple[Settings, dict, Template]:
    """(settings, resources, template) of the default stack, then of the tuned one."""
    if request.param == "tuned":
        settings, template = request.getfixturevalue("tuned")
    return settings, template.to_json()["Resources"], template


IMPORTED_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENCRYPTION = {"created": {"create_kms_key": True}, "imported": {"kms_key_arn": IMPORTED_KEY_ARN}}


@pytest.fixture(scope="module", params=sorted(ENCRYPTION))
def encrypted(request: pytest.FixtureRequest, app: App, tmp_path_factory: pytest.TempPathFactory):
    """(how the key came, the app, its template) of the stack built with a customer-managed key."""
    context = cdk_context(encryption=ENCRYPTION[request.param])
    encrypted_app = build_app(context, outdir=str(tmp_path_factory.mktemp(f"cdk.out.{request.param}")))
    return request.param, encrypted_app, Template.from_stack(encrypted_app.node.find_child(STACK_ID))


def of_type(resources: dict, kind: str) -> dict[str, dict]:
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == kind}


def output_ref(template: Template, name: str) -> str:
    return template.to_json()["Outputs"][name]["Value"]["Ref"]


def functions_by_name(resources: dict) -> dict[str, tuple[str, dict]]:
    """topology name -> (logical id, properties) of its Lambda function."""
    return {
        HANDLERS[props["Properties"]["Handler"]]: (logical_id, props["Properties"])
        for logical_id, props in of_type(resources, "AWS::Lambda::Function").items()
    }


def statements_of_role(resources: dict, role_id: str) -> Iterator[dict]:
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            yield from policy["Properties"]["PolicyDocument"]["Statement"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# --- storage ------------------------------------------------------------------------------------


def test_every_bucket_is_encrypted_private_and_refuses_plain_http(resources):
    buckets = of_type(resources, "AWS::S3::Bucket")
    assert len(buckets) == 3  # input, output, access logs
    for props in (b["Properties"] for b in buckets.values()):
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
    ssl_only = {
        policy["Properties"]["Bucket"]["Ref"]
        for policy in of_type(resources, "AWS::S3::BucketPolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    }
    assert ssl_only == set(buckets)


def test_input_bucket_is_versioned_logged_and_announces_new_objects_to_eventbridge(template, resources):
    props = resources[output_ref(template, "InputBucketName")]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    assert "DestinationBucketName" in props["LoggingConfiguration"]
    # Native EventBridge delivery: no custom-resource Lambda to set it.
    assert not of_type(resources, "Custom::S3BucketNotifications")


def test_output_bucket_expires_working_files_under_staging_only(template, resources, settings):
    props = resources[output_ref(template, "OutputBucketName")]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = props["LifecycleConfiguration"]["Rules"]
    expiring = [rule for rule in rules if "ExpirationInDays" in rule]
    assert expiring == [
        {
            "Id": "expire-staging",
            "Prefix": "staging/",
            "ExpirationInDays": settings.retention.staging_days,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "Status": "Enabled",
        }
    ]
    assert not settings.output_prefix.startswith("staging")  # results are never expired
    assert any("AbortIncompleteMultipartUpload" in rule for rule in rules)


def lifecycle_rules(template: Template, resources: dict, output: str) -> dict[str, dict]:
    props = resources[output_ref(template, output)]["Properties"]
    return {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}


@pytest.mark.parametrize("bucket", ["InputBucketName", "OutputBucketName"])
def test_both_buckets_expire_old_versions_their_delete_markers_and_open_uploads_after_the_set_days(deployed, bucket):
    settings, resources, template = deployed
    rules = lifecycle_rules(template, resources, bucket)
    retention = settings.retention
    assert rules["expire-old-versions"] == {
        "Id": "expire-old-versions",
        "NoncurrentVersionExpiration": {"NoncurrentDays": retention.noncurrent_days},
        "Status": "Enabled",
    }
    assert rules["remove-lone-delete-markers"] == {
        "Id": "remove-lone-delete-markers",
        "ExpiredObjectDeleteMarker": True,
        "Status": "Enabled",
    }
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": retention.incomplete_upload_days
    }
    for rule in rules.values():  # whole-bucket rules reach every key
        assert "Prefix" not in rule or rule["Id"] == "expire-staging"


def test_uploads_are_kept_by_default_and_expire_after_input_days_when_set(template, resources, tuned):
    kept = lifecycle_rules(template, resources, "InputBucketName")
    assert not [rule for rule in kept.values() if "ExpirationInDays" in rule]
    settings, tuned_template = tuned
    rules = lifecycle_rules(tuned_template, tuned_template.to_json()["Resources"], "InputBucketName")
    assert rules["expire-uploads"] == {
        "Id": "expire-uploads",
        "ExpirationInDays": settings.retention.input_days,
        "Status": "Enabled",
    }


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"noncurrent_days": 0}, r"retention\.noncurrent_days: Input should be greater than or equal to 1"),
        ({"incomplete_upload_days": "soon"}, r"retention\.incomplete_upload_days: Input should be a valid integer"),
        ({"input_days": 7}, r"retention: .*input_days \(7\) is below staging_days \(14\)"),
    ],
)
def test_a_wrong_lifecycle_setting_fails_the_app_naming_it(app, retention, message):
    with pytest.raises(SettingsError, match=message):
        build_app(cdk_context(retention=retention))


def test_job_table_uses_topology_keys_on_demand_with_pitr_and_ttl(template, resources):
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert list(tables) == [output_ref(template, "JobTableName")]
    props = next(iter(tables.values()))["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
        {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
    ]
    # the same keys and index as the table the local run and the tests create
    local = job_table_definition("jobs")
    by_name = lambda a: a["AttributeName"]  # noqa: E731
    assert sorted(props["AttributeDefinitions"], key=by_name) == sorted(local["AttributeDefinitions"], key=by_name)
    [index] = props["GlobalSecondaryIndexes"]
    [expected] = local["GlobalSecondaryIndexes"]
    assert index["IndexName"] == expected["IndexName"] == JOBS_BY_START_INDEX
    assert index["KeySchema"] == expected["KeySchema"] and index["Projection"] == {"ProjectionType": "ALL"}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": TABLE_TTL_ATTRIBUTE, "Enabled": True}


# --- encryption with a customer-managed key -------------------------------------------------------


def kms_statements(resources: dict) -> list[tuple[str, dict]]:
    """(role logical id, statement) of every identity-policy statement naming a kms: action."""
    return [
        (role["Ref"], statement)
        for policy in of_type(resources, "AWS::IAM::Policy").values()
        for role in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(action.startswith("kms:") for action in as_list(statement["Action"]))
    ]


def the_key(kind: str, resources: dict):
    if kind == "imported":
        assert not of_type(resources, "AWS::KMS::Key")
        return IMPORTED_KEY_ARN
    (key_id,) = of_type(resources, "AWS::KMS::Key")
    return {"Fn::GetAtt": [key_id, "Arn"]}


def test_without_a_key_setting_every_resource_keeps_aws_encryption_and_no_role_uses_kms(template, resources):
    assert not of_type(resources, "AWS::KMS::Key")
    assert not kms_statements(resources)
    (table,) = of_type(resources, "AWS::DynamoDB::Table").values()
    assert "SSESpecification" not in table["Properties"]  # AWS-owned key
    for queue in of_type(resources, "AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in queue["Properties"]
    (topic,) = of_type(resources, "AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" not in topic["Properties"]
    assert "DataKeyArn" not in template.to_json()["Outputs"]


def test_with_a_key_the_buckets_table_queues_and_topic_use_it(encrypted):
    kind, _, template = encrypted
    resources = template.to_json()["Resources"]
    key = the_key(kind, resources)
    access_logs = resources[output_ref(template, "InputBucketName")]["Properties"]["LoggingConfiguration"]
    for bucket_id, bucket in of_type(resources, "AWS::S3::Bucket").items():
        (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        if {"Ref": bucket_id} == access_logs["DestinationBucketName"]:
            # S3 server access logging delivers only to an SSE-S3 bucket.
            assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
            continue
        assert rule == {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {"KMSMasterKeyID": key, "SSEAlgorithm": "aws:kms"},
        }
    (table,) = of_type(resources, "AWS::DynamoDB::Table").values()
    assert table["Properties"]["SSESpecification"] == {"KMSMasterKeyId": key, "SSEEnabled": True, "SSEType": "KMS"}
    queues = of_type(resources, "AWS::SQS::Queue").values()
    assert len(queues) == 2
    for queue in queues:
        assert queue["Properties"]["KmsMasterKeyId"] == key and "SqsManagedSseEnabled" not in queue["Properties"]
    (topic,) = of_type(resources, "AWS::SNS::Topic").values()
    assert topic["Properties"]["KmsMasterKeyId"] == key
    assert template.to_json()["Outputs"]["DataKeyArn"]["Value"] == key


# What each service needs of the key for a role's calls (see infra/storage.py and infra/hot_path.py).
KEY_USE = {
    "s3": {
        "s3:GetObject": {"kms:Decrypt"},
        "s3:PutObject": {"kms:GenerateDataKey"},
        "s3:AbortMultipartUpload": {"kms:Decrypt"},
    },
    "sqs": {"sqs:SendMessage": {"kms:GenerateDataKey", "kms:Decrypt"}, "sqs:ReceiveMessage": {"kms:Decrypt"}},
}
TABLE_READS = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}


def expected_key_use(name: str) -> dict[str, set[str]]:
    """Service -> the kms actions a function's role may use through it, from what the role does there."""
    actions = {action for action, _ in EXPECTED_ACCESS[name]}
    expected = {
        service: set().union(*(use.get(action, set()) for action in actions)) for service, use in KEY_USE.items()
    }
    table = {action for action in actions if action.startswith("dynamodb:")}
    if table:
        read = {"kms:Decrypt", "kms:DescribeKey"}
        expected["dynamodb"] = read if table <= TABLE_READS else read | {"kms:Encrypt", "kms:GenerateDataKey"}
    return {service: use for service, use in expected.items() if use}


def test_with_a_key_each_role_may_use_it_only_through_its_services_and_only_as_its_calls_need(encrypted):
    kind, _, template = encrypted
    resources = template.to_json()["Resources"]
    key = the_key(kind, resources)
    by_role: dict[str, dict[str, set[str]]] = {}
    for role_id, statement in kms_statements(resources):
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] == key  # that key, never "*"
        (endpoint,) = [statement["Condition"]["StringEquals"]["kms:ViaService"]]
        service = endpoint.removesuffix(".us-east-1.amazonaws.com")
        assert service not in by_role.setdefault(role_id, {}), (role_id, service)  # one statement per service
        by_role[role_id][service] = set(as_list(statement["Action"]))
    functions = functions_by_name(resources)
    for name, (_, props) in functions.items():
        assert by_role.pop(props["Role"]["Fn::GetAtt"][0], {}) == expected_key_use(name), name
    assert not by_role  # the state machine's and the trigger's roles touch no encrypted data


@pytest.mark.parametrize("encrypted", ["created"], indirect=True)
def test_a_created_key_rotates_outlives_the_stack_and_lets_cloudwatch_alarms_reach_the_topic(encrypted):
    _, _, template = encrypted
    (key,) = of_type(template.to_json()["Resources"], "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    (cloudwatch,) = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert sorted(as_list(cloudwatch["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"]


@pytest.mark.parametrize("encrypted", ["imported"], indirect=True)
def test_an_imported_key_warns_that_its_policy_must_let_cloudwatch_alarms_reach_the_topic(encrypted):
    _, app, template = encrypted
    # Read from the construct tree: assertions.Annotations trips over a jsii type these versions lack.
    warnings = [
        str(entry.data)
        for construct in app.node.find_child(STACK_ID).node.find_all()
        for entry in construct.node.metadata
        if entry.type == "aws:cdk:warning"
    ]
    assert [w for w in warnings if "must allow cloudwatch.amazonaws.com kms:Decrypt, kms:GenerateDataKey*" in w]


def test_with_a_key_cdk_nag_still_finds_nothing_unacknowledged(encrypted):
    _, app, _ = encrypted
    report = AwsSolutionsChecks().validate_scope(app)
    findings = [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations]
    assert report.success, findings


def test_a_wrong_key_setting_fails_the_app_naming_it(app):
    with pytest.raises(SettingsError, match=r"encryption\.kms_key_arn: .*not a KMS key ARN"):
        build_app(cdk_context(encryption={"kms_key_arn": "alias/batchline"}))
    with pytest.raises(SettingsError, match=r"encryption\.kms_key_arn is a key in eu-west-1"):
        build_app(cdk_context(encryption={"kms_key_arn": IMPORTED_KEY_ARN.replace("us-east-1", "eu-west-1")}))


# --- functions ----------------------------------------------------------------------------------


def test_every_topology_function_and_the_worker_run_their_handler_sized_from_settings(resources, settings):
    functions = functions_by_name(resources)
    assert sorted(functions) == sorted([spec.name for spec in FUNCTIONS] + [WORKER.name])
    (layer_id,) = of_type(resources, "AWS::Lambda::LayerVersion")
    for name, (_, props) in functions.items():
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["x86_64"]
        memory = settings.realtime.worker_memory_mb if name == WORKER.name else settings.functions.memory_mb
        assert props["MemorySize"] == memory  # the worker waits on the provider: it needs less
        assert props["Layers"] == [{"Ref": layer_id}]
        if name != WORKER.name:
            assert props["Timeout"] == settings.functions.timeout_seconds
            assert props["EphemeralStorage"] == {"Size": settings.functions.ephemeral_storage_mb}
            assert "ReservedConcurrentExecutions" not in props
    roles = {props["Role"]["Fn::GetAtt"][0] for _, props in functions.values()}
    assert len(roles) == len(FUNCTIONS) + 1  # one role per function, the worker's included


def test_every_function_gets_the_deployed_settings_and_resource_names(template, resources, settings):
    for _, props in functions_by_name(resources).values():
        env = props["Environment"]["Variables"]
        assert load_settings(json.loads(env["BATCHLINE_SETTINGS"])) == settings
        assert env["TABLE_NAME"] == {"Ref": output_ref(template, "JobTableName")}
        assert env["OUTPUT_BUCKET"] == {"Ref": output_ref(template, "OutputBucketName")}
        assert env["QUEUE_URL"] == {"Ref": output_ref(template, "QueueUrl")}
        assert env["POWERTOOLS_SERVICE_NAME"] == "batchline"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE == "Batchline"
        assert env["TIKTOKEN_CACHE_DIR"] == "/opt/tiktoken"
        assert env["OPENAI_API_KEY_SECRET_ARN"] == {"Ref": output_ref(template, "OpenAIApiKeySecretArn")}


def test_no_environment_variable_holds_an_api_key(resources):
    for _, props in functions_by_name(resources).values():
        for name, value in props["Environment"]["Variables"].items():
            if "KEY" in name.upper():
                assert name.endswith("_SECRET_ARN"), name
                assert isinstance(value, dict) and "Ref" in value, name  # a reference, never a literal
            assert "sk-" not in json.dumps(value)


EXPECTED_ACCESS = {
    "plan": {
        ("s3:GetObject", "input/*"),
        ("s3:PutObject", "output/staging/*"),
        ("s3:AbortMultipartUpload", "output/staging/*"),
        ("dynamodb:GetItem", "table"),
        ("dynamodb:PutItem", "table"),
        ("dynamodb:UpdateItem", "table"),
        ("dynamodb:BatchWriteItem", "table"),
        ("dynamodb:Query", "table"),
    },
    # SubmitShards and CheckShards run the same poll loop over the job's shards.
    "submit": {
        ("s3:GetObject", "output/staging/*"),
        ("s3:PutObject", "output/staging/*"),
        ("s3:AbortMultipartUpload", "output/staging/*"),
        ("dynamodb:GetItem", "table"),
        ("dynamodb:PutItem", "table"),
        ("dynamodb:UpdateItem", "table"),
        ("dynamodb:DeleteItem", "table"),  # queue room given back when a batch is collected or refused
        ("dynamodb:Query", "table"),  # every shard of the job, once a poll
        ("sqs:SendMessage", "queue"),  # a round's last few requests sent realtime
        ("secretsmanager:GetSecretValue", "secret"),
    },
    "check": {
        ("s3:GetObject", "output/staging/*"),
        ("s3:PutObject", "output/staging/*"),
        ("s3:AbortMultipartUpload", "output/staging/*"),
        ("dynamodb:GetItem", "table"),
        ("dynamodb:PutItem", "table"),
        ("dynamodb:UpdateItem", "table"),
        ("dynamodb:DeleteItem", "table"),  # queue room given back when a batch is collected or refused
        ("dynamodb:Query", "table"),  # every shard of the job, once a poll
        ("sqs:SendMessage", "queue"),  # a round's last few requests sent realtime
        ("secretsmanager:GetSecretValue", "secret"),
    },
    "enqueue": {
        ("s3:GetObject", "output/staging/*/shards/*"),
        ("s3:PutObject", "output/staging/*/realtime/bodies/*"),
        ("sqs:SendMessage", "queue"),
        ("dynamodb:UpdateItem", "table"),
        ("dynamodb:BatchGetItem", "table"),  # a resumed job's answered lines, never sent again
    },
    "realtime_progress": {("dynamodb:GetItem", "table"), ("dynamodb:UpdateItem", "table")},
    "finalize": {
        ("s3:GetObject", "input/*"),
        ("s3:GetObject", "output/staging/*"),
        ("s3:PutObject", "output/staging/*/realtime/results.jsonl"),
        ("s3:PutObject", "output/staging/*/realtime/errors.jsonl"),
        ("s3:AbortMultipartUpload", "output/staging/*/realtime/results.jsonl"),
        ("s3:AbortMultipartUpload", "output/staging/*/realtime/errors.jsonl"),
        ("s3:ListBucket", "output"),
        ("s3:PutObject", "output/jobs/*"),
        ("s3:AbortMultipartUpload", "output/jobs/*"),
        ("dynamodb:GetItem", "table"),
        ("dynamodb:Query", "table"),
        ("dynamodb:UpdateItem", "table"),
    },
    "worker": {
        ("s3:GetObject", "output/staging/*/realtime/bodies/*"),
        ("s3:PutObject", "output/staging/*/realtime/outcomes/*"),
        # Powertools idempotency, the outcome transaction (Put + Update), job, rate-limit and circuit items.
        ("dynamodb:GetItem", "table"),
        ("dynamodb:UpdateItem", "table"),
        ("dynamodb:BatchGetItem", "table"),  # which of a batch's lines are answered
        # The event source mapping polls with the worker's role; the handler hands messages back.
        ("sqs:ReceiveMessage", "queue"),
        ("sqs:DeleteMessage", "queue"),
        ("sqs:GetQueueAttributes", "queue"),
        ("sqs:ChangeMessageVisibility", "queue"),
        ("sqs:SendMessage", "queue"),  # requeues a request that only waited for room
        ("secretsmanager:GetSecretValue", "secret"),
    },
}
WRITE_OWN_LOGS = {("logs:CreateLogStream", "own log group"), ("logs:PutLogEvents", "own log group")}
# Added by CDK for active tracing; X-Ray has no resource-level permissions. The only "*" a role may hold.
SEND_TRACES = {("xray:PutTraceSegments", "*"), ("xray:PutTelemetryRecords", "*")}


def test_each_function_role_holds_exactly_what_its_handler_uses(template, resources):
    names = {
        output_ref(template, "InputBucketName"): "input",
        output_ref(template, "OutputBucketName"): "output",
        output_ref(template, "JobTableName"): "table",
        output_ref(template, "OpenAIApiKeySecretArn"): "secret",
        output_ref(template, "QueueUrl"): "queue",
        output_ref(template, "DeadLetterQueueUrl"): "dead-letter queue",
    }

    def describe(resource, own_logs: str) -> str:
        if isinstance(resource, str):
            return resource
        if "Fn::Join" in resource:
            return "".join(describe(part, own_logs) for part in resource["Fn::Join"][1])
        logical_id = resource["Ref"] if "Ref" in resource else resource["Fn::GetAtt"][0]
        return "own log group" if logical_id == own_logs else names.get(logical_id, logical_id)

    assert set(EXPECTED_ACCESS) == {spec.name for spec in FUNCTIONS} | {WORKER.name}
    for name, (_, props) in functions_by_name(resources).items():
        role_id = props["Role"]["Fn::GetAtt"][0]
        own_logs = props["LoggingConfig"]["LogGroup"]["Ref"]
        granted = set()
        for statement in statements_of_role(resources, role_id):
            assert statement["Effect"] == "Allow" and "Condition" not in statement
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    granted.add((action, describe(resource, own_logs)))
        assert granted == EXPECTED_ACCESS[name] | WRITE_OWN_LOGS | SEND_TRACES, name
        role = resources[role_id]["Properties"]
        assert "ManagedPolicyArns" not in role  # no AWS managed policy
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
        ]


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        (SHARD_FILES, JobLayout("report-3f2a", "jobs").shard_requests("00007")),
        (SHARD_FILES, JobLayout("report-3f2a", "jobs").shard_manifest("00007")),
        (REALTIME_BODIES, JobLayout("report-3f2a", "jobs").realtime_body(41)),
        (REALTIME_OUTCOMES, JobLayout("report-3f2a", "jobs").realtime_outcomes("3f9c0a")),
        (REALTIME_MERGED[0], JobLayout("report-3f2a", "jobs").realtime_results),
        (REALTIME_MERGED[1], JobLayout("report-3f2a", "jobs").realtime_errors),
    ],
)
def test_narrow_staging_grants_cover_the_keys_the_handlers_use(pattern, key):
    # IAM's "*" spans "/" like fnmatch's: a key the layout moves out of its pattern would be denied.
    assert fnmatchcase(key, f"{STAGING_PREFIX}/{pattern}")


# --- the hot path ---------------------------------------------------------------------------------


def the_queues(template: Template, resources: dict) -> tuple[dict, dict]:
    return (
        resources[output_ref(template, "QueueUrl")]["Properties"],
        resources[output_ref(template, "DeadLetterQueueUrl")]["Properties"],
    )


def test_queue_redrives_to_the_dead_letter_queue_after_max_receive_count_and_outlasts_the_worker(deployed):
    settings, resources, template = deployed
    queue, _ = the_queues(template, resources)
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [output_ref(template, "DeadLetterQueueUrl"), "Arn"]},
        "maxReceiveCount": settings.realtime.max_receive_count,
    }
    assert queue["VisibilityTimeout"] == 6 * settings.realtime.worker_timeout_seconds


def test_both_queues_are_encrypted_refuse_plain_http_and_dead_letters_stay_14_days(template, resources):
    queue, dead_letters = the_queues(template, resources)
    assert queue["SqsManagedSseEnabled"] is True and dead_letters["SqsManagedSseEnabled"] is True
    assert dead_letters["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "RedrivePolicy" not in dead_letters
    ssl_only = {
        queue_ref["Ref"]
        for policy in of_type(resources, "AWS::SQS::QueuePolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for queue_ref in policy["Properties"]["Queues"]
    }
    assert ssl_only == set(of_type(resources, "AWS::SQS::Queue"))
    assert len(ssl_only) == 2


def test_worker_drains_the_queue_in_batches_at_most_max_concurrency_at_once_reporting_item_failures(deployed):
    settings, resources, template = deployed
    (mapping,) = of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    worker_id, worker = functions_by_name(resources)[WORKER.name]
    assert props["FunctionName"] == {"Ref": worker_id}
    assert props["EventSourceArn"] == {"Fn::GetAtt": [output_ref(template, "QueueUrl"), "Arn"]}
    assert props["BatchSize"] == settings.realtime.batch_size
    assert props["ScalingConfig"] == {"MaximumConcurrency": settings.realtime.event_source_concurrency()}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert worker["Timeout"] == settings.realtime.worker_timeout_seconds
    assert worker["ReservedConcurrentExecutions"] == settings.realtime.reserved_concurrency


def test_retention_of_working_files_logs_and_dead_letters_comes_from_settings(deployed):
    settings, resources, _ = deployed
    retention = settings.retention
    log_groups = of_type(resources, "AWS::Logs::LogGroup").values()
    assert len(log_groups) == len(FUNCTIONS) + 2  # every function, the worker, the state machine
    assert {group["Properties"]["RetentionInDays"] for group in log_groups} == {retention.log_days}
    queues = [q["Properties"] for q in of_type(resources, "AWS::SQS::Queue").values()]
    (dead_letters,) = [q for q in queues if "RedrivePolicy" not in q]
    assert dead_letters["MessageRetentionPeriod"] == retention.dead_letter_days * 86400
    staging = [
        rule
        for bucket in of_type(resources, "AWS::S3::Bucket").values()
        for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
        if rule.get("Id") == "expire-staging"
    ]
    assert [rule["ExpirationInDays"] for rule in staging] == [retention.staging_days]


def test_a_log_retention_cloudwatch_does_not_offer_fails_with_a_message_naming_it():
    with pytest.raises(SettingsError, match="retention: .*log_days \\(45\\) must be one of CloudWatch's periods"):
        build_app(cdk_context(retention={"log_days": 45}))


def test_tuned_realtime_settings_are_not_the_defaults(tuned):
    # Otherwise the parametrized hot-path tests above would prove nothing about reading settings.
    settings, _ = tuned
    defaults = load_settings({}).realtime
    for name, value in TUNED_REALTIME.items():
        assert getattr(settings.realtime, name) == value != getattr(defaults, name), name


def test_max_concurrency_above_reserved_concurrency_fails_the_app_naming_both(app):
    with pytest.raises(SettingsError, match=r"realtime.*max_concurrency \(8\) exceeds reserved_concurrency \(4\)"):
        build_app(cdk_context(realtime={"max_concurrency": 8, "reserved_concurrency": 4}))


# --- orchestration ------------------------------------------------------------------------------


def test_state_machine_substitutions_are_exactly_the_asl_placeholders(template, resources, settings):
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", STATE_MACHINE_ASL.read_text()))
    assert set(substitutions) == placeholders
    assert {"EnqueueFunctionArn", "RealtimeProgressFunctionArn"} <= placeholders
    assert substitutions["MapMaxConcurrency"] == str(settings.map_max_concurrency)
    functions = functions_by_name(resources)
    for spec in FUNCTIONS:
        assert substitutions[spec.substitution] == {"Fn::GetAtt": [functions[spec.name][0], "Arn"]}


def test_state_machine_logs_every_event_without_its_data_traces_and_may_invoke_exactly_its_functions(resources):
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    # Every event, none of the states' inputs, outputs or failure causes: they may quote a prompt or an answer.
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert props["TracingConfiguration"] == {"Enabled": True}
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    invoke = [s for s in statements_of_role(resources, role_id) if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert len(invoke) == 1 and as_list(invoke[0]["Action"]) == ["lambda:InvokeFunction"]
    functions = functions_by_name(resources)
    expected = [{"Fn::GetAtt": [functions[spec.name][0], "Arn"]} for spec in FUNCTIONS]  # never the worker
    assert sorted(map(json.dumps, invoke[0]["Resource"])) == sorted(map(json.dumps, expected))


def test_the_state_machine_may_start_its_own_executions_to_hand_a_job_over_and_nothing_else(resources):
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    name = props["StateMachineName"]
    statements = list(statements_of_role(resources, props["RoleArn"]["Fn::GetAtt"][0]))
    start = [s for s in statements if "states:StartExecution" in as_list(s["Action"])]
    assert len(start) == 1 and as_list(start[0]["Action"]) == ["states:StartExecution"]
    assert json.dumps(start[0]["Resource"]).endswith(f':stateMachine:{name}"]]}}')
    assert not [
        s for s in statements if {"states:DescribeExecution", "states:StopExecution"} & set(as_list(s["Action"]))
    ]


def test_every_function_and_the_state_machine_send_xray_traces(resources):
    functions = functions_by_name(resources)
    assert len(functions) == len(FUNCTIONS) + 1  # the worker too
    for name, (_, props) in functions.items():
        assert props.get("TracingConfig") == {"Mode": "Active"}, name
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"].get("TracingConfiguration") == {"Enabled": True}
    # Tracing without the permission to send traces would record nothing.
    roles = [props["Role"]["Fn::GetAtt"][0] for _, props in functions.values()]
    for role_id in [*roles, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]]:
        actions = {action for s in statements_of_role(resources, role_id) for action in as_list(s["Action"])}
        assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= actions, role_id


def test_trigger_is_topology_pattern_and_input_transformer(template, resources, settings):
    (rule,) = of_type(resources, "AWS::Events::Rule").values()
    props = rule["Properties"]
    assert props["EventPattern"] == object_created_pattern({"Ref": output_ref(template, "InputBucketName")})
    (target,) = props["Targets"]
    assert target["Arn"] == {"Ref": output_ref(template, "StateMachineArn")}
    assert target["InputTransformer"] == {
        "InputPathsMap": EXECUTION_INPUT_PATHS,
        "InputTemplate": execution_input_template(settings.poll_seconds),
    }


# --- secret, monitoring, outputs -----------------------------------------------------------------


def test_api_key_secret_holds_no_value_in_the_template(template, resources):
    secrets = of_type(resources, "AWS::SecretsManager::Secret")
    assert list(secrets) == [output_ref(template, "OpenAIApiKeySecretArn")]
    props = next(iter(secrets.values()))["Properties"]
    assert "SecretString" not in props  # a random placeholder until the operator puts the key in
    readers = {
        name
        for name, (_, fn) in functions_by_name(resources).items()
        for s in statements_of_role(resources, fn["Role"]["Fn::GetAtt"][0])
        if "secretsmanager:GetSecretValue" in as_list(s["Action"])
    }
    assert readers == {"submit", "check", "worker"}


def alarms_by_metric(resources: dict) -> dict[tuple[str, str], dict]:
    alarms = {}
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        metric = alarm["Properties"]["Metrics"][0]["MetricStat"]["Metric"]
        alarms[(metric["Namespace"], metric["MetricName"])] = alarm["Properties"]
    return alarms


CUSTOM_ALARMS = {  # metric -> what its description must tell the operator
    BUDGET_FALLBACK_METRIC: "fallback models",
    BUDGET_STOP_METRIC: "upload the same file again",
    BATCHES_STUCK_METRIC: "stuck_after_seconds",
}


def test_every_alarm_fires_on_one_occurrence_goes_to_the_topic_and_ignores_missing_data(template, resources):
    (topic_id,) = of_type(resources, "AWS::SNS::Topic")
    assert output_ref(template, "AlarmTopicArn") == topic_id
    alarms = alarms_by_metric(resources)
    assert set(alarms) == {
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        *((METRICS_NAMESPACE, name) for name in CUSTOM_ALARMS),
    }
    for props in alarms.values():
        assert props["AlarmActions"] == [{"Ref": topic_id}]
        assert props["Threshold"] == 1 and props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert props["EvaluationPeriods"] == 1
        assert props["TreatMissingData"] == "notBreaching"
        assert len(props["AlarmDescription"]) >= 100  # what happened and what to do


def test_a_dead_letter_alarms_on_the_dead_letter_queue_at_its_maximum(template, resources):
    dead_letters = alarms_by_metric(resources)[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]
    stat = dead_letters["Metrics"][0]["MetricStat"]
    assert stat["Metric"]["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [output_ref(template, "DeadLetterQueueUrl"), "QueueName"]}}
    ]
    assert stat["Stat"] == "Maximum"  # one message for one moment is enough


@pytest.mark.parametrize("metric_name", sorted(CUSTOM_ALARMS))
def test_budget_thresholds_and_a_stuck_batch_each_raise_an_alarm_on_the_topic(template, resources, metric_name):
    (topic_id,) = of_type(resources, "AWS::SNS::Topic")
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmActions": [{"Ref": topic_id}],
            "AlarmDescription": Match.string_like_regexp(re.escape(CUSTOM_ALARMS[metric_name])),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 1,
            "TreatMissingData": "notBreaching",
            "Metrics": [
                {
                    "MetricStat": {
                        "Metric": {
                            "Namespace": METRICS_NAMESPACE,
                            "MetricName": metric_name,
                            # Exactly what Powertools Metrics publishes these with: no route, no status.
                            "Dimensions": [{"Name": "service", "Value": "batchline"}],
                        },
                        "Stat": "Sum",
                    }
                }
            ],
        },
    )


def dashboard_widgets(resources: dict) -> list[dict]:
    """The dashboard's widgets, with CloudFormation references replaced by the logical id they name."""
    (dashboard,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = "".join(part if isinstance(part, str) else part.get("Ref") or part["Fn::GetAtt"][0] for part in parts)
    return json.loads(body)["widgets"]


def graph_lines(widget: dict) -> list[dict]:
    """Each line of a graph widget: a metric (namespace, name, dimensions, options) or an expression."""
    lines = []
    for entry in widget["properties"].get("metrics", []):  # the alarm status widget has none
        options = entry[-1] if isinstance(entry[-1], dict) else {}
        fields = [part for part in entry if not isinstance(part, dict)]
        if not fields:
            lines.append({"expression": options["expression"], **options})
            continue
        namespace, name, *dimensions = fields
        lines.append(
            {
                "namespace": namespace,
                "name": name,
                "dimensions": dict(zip(dimensions[::2], dimensions[1::2], strict=True)),
                **options,
            }
        )
    return lines


def dashboard_metrics(resources: dict) -> list[tuple[str, str, str]]:
    """(namespace, metric name, what it measures: a logical id or a literal) of every dashboard metric."""
    return [
        (line["namespace"], line["name"], next(iter(line["dimensions"].values()), ""))
        for widget in dashboard_widgets(resources)
        for line in graph_lines(widget)
        if "namespace" in line
    ]


def custom_lines(resources: dict, name: str) -> list[tuple[str, dict]]:
    """(widget title, line) of every dashboard line showing the functions' metric `name`."""
    return [
        (widget["properties"]["title"], line)
        for widget in dashboard_widgets(resources)
        for line in graph_lines(widget)
        if line.get("namespace") == METRICS_NAMESPACE and line["name"] == name
    ]


def test_dashboard_shows_jobs_function_errors_the_queue_and_the_worker(template, resources):
    (dashboard_id,) = of_type(resources, "AWS::CloudWatch::Dashboard")
    assert output_ref(template, "DashboardName") == dashboard_id
    metrics = dashboard_metrics(resources)
    names = {(namespace, name) for namespace, name, _ in metrics}
    for expected in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed"):
        assert ("AWS/States", expected) in names
    assert {("AWS/DynamoDB", "ReadThrottleEvents"), ("AWS/DynamoDB", "WriteThrottleEvents")} <= names
    functions = functions_by_name(resources)
    assert {of for _, name, of in metrics if name == "Errors"} == {logical_id for logical_id, _ in functions.values()}
    worker_id = functions[WORKER.name][0]
    assert ("AWS/Lambda", "Throttles", worker_id) in metrics
    queue, dead_letters = output_ref(template, "QueueUrl"), output_ref(template, "DeadLetterQueueUrl")
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue) in metrics
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue) in metrics
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dead_letters) in metrics
    # Shown once each: the queue's and the worker's graphs are not repeated elsewhere.
    assert metrics.count(("AWS/Lambda", "Throttles", worker_id)) == 1
    assert metrics.count(("AWS/SQS", "ApproximateNumberOfMessagesVisible", dead_letters)) == 1
    assert metrics.count(("AWS/SQS", "ApproximateAgeOfOldestMessage", queue)) == 1


def test_dashboard_shows_every_metric_the_functions_publish(resources):
    published = {
        *JOB_METRICS,
        BATCH_AGE_METRIC,
        BATCHES_STUCK_METRIC,
        BATCHES_RESUBMITTED_METRIC,
        MONTHLY_SPEND_METRIC,
        MONTHLY_BUDGET_METRIC,
        PROVIDER_CALLS_METRIC,
        PROVIDER_RATE_LIMITED_METRIC,
        BATCHES_SUBMITTED_METRIC,
        SHARDS_FAILED_METRIC,
        JOBS_RESUMED_METRIC,
        JOBS_REFUSED_METRIC,
        REQUESTS_ENQUEUED_METRIC,
        REALTIME_BACKLOG_METRIC,
        BUDGET_FALLBACK_METRIC,
        BUDGET_STOP_METRIC,
    }
    # Every metric name topology declares for the functions is one of them.
    declared = {value for name, value in vars(topology).items() if name.endswith("_METRIC")}
    assert declared == published - set(JOB_METRICS)
    shown = [line for widget in dashboard_widgets(resources) for line in graph_lines(widget) if "namespace" in line]
    assert {line["name"] for line in shown if line["namespace"] == METRICS_NAMESPACE} == published
    for line in shown:
        if line["namespace"] == METRICS_NAMESPACE:
            assert line["dimensions"]["service"] == "batchline", line  # Powertools' service dimension
    for name in JOB_METRICS:  # what Finalize publishes per job: a line per route
        routes = [line["dimensions"].get("route") for _, line in custom_lines(resources, name)]
        assert sorted(routes) == ["batch", "realtime"], name


@pytest.mark.parametrize("statistic", ["Maximum", "SampleCount"])
def test_dashboard_graphs_batches_by_status_their_age_and_how_many_were_polled(resources, statistic):
    # Maximum: the oldest batch in each status; SampleCount: how many polls found a batch in it.
    lines = [(title, line) for title, line in custom_lines(resources, BATCH_AGE_METRIC) if line["stat"] == statistic]
    assert sorted(line["dimensions"]["status"] for _, line in lines) == sorted(BATCH_STATUSES_WATCHED)
    assert len({title for title, _ in lines}) == 1  # one graph, a line per status
    for _, line in lines:
        assert set(line["dimensions"]) == {"service", "status"}


def test_dashboard_counts_stuck_and_resubmitted_batches(resources):
    for name in (BATCHES_STUCK_METRIC, BATCHES_RESUBMITTED_METRIC):
        ((_, line),) = custom_lines(resources, name)
        assert line["stat"] == "Sum" and line["dimensions"] == {"service": "batchline"}


def test_dashboard_sets_the_months_spend_against_its_budget_beside_spend_per_route(resources):
    (spend_title, spend), (budget_title, budget) = (
        *custom_lines(resources, MONTHLY_SPEND_METRIC),
        *custom_lines(resources, MONTHLY_BUDGET_METRIC),
    )
    assert spend_title == budget_title  # on one graph
    assert spend["stat"] == budget["stat"] == "Maximum"
    assert spend["dimensions"] == budget["dimensions"] == {"service": "batchline"}
    per_route = custom_lines(resources, "CostUSD")
    assert sorted(line["dimensions"]["route"] for _, line in per_route) == ["batch", "realtime"]
    widgets = [widget["properties"]["title"] for widget in dashboard_widgets(resources)]
    assert widgets.index(spend_title) == widgets.index(per_route[0][0]) + 1  # right beside it


def test_dashboard_shows_the_429_share_of_realtime_calls(resources):
    (widget,) = [w for w in dashboard_widgets(resources) if any("expression" in line for line in graph_lines(w))]
    lines = graph_lines(widget)
    (share,) = [line for line in lines if "expression" in line]
    terms = re.fullmatch(r"100 \* (\w+) / (\w+)", share["expression"])
    assert terms, share["expression"]
    inputs = {line["id"]: line for line in lines if "namespace" in line}
    rate_limited, calls = (inputs[term] for term in terms.groups())
    assert (rate_limited["name"], calls["name"]) == (PROVIDER_RATE_LIMITED_METRIC, PROVIDER_CALLS_METRIC)
    for line in (rate_limited, calls):
        assert line["namespace"] == METRICS_NAMESPACE and line["stat"] == "Sum"
        assert line["dimensions"] == {"service": "batchline"}
        assert line["visible"] is False  # only the share is drawn


def test_dashboard_shows_the_state_of_every_alarm(resources):
    (widget,) = [widget for widget in dashboard_widgets(resources) if widget["type"] == "alarm"]
    assert sorted(widget["properties"]["alarms"]) == sorted(of_type(resources, "AWS::CloudWatch::Alarm"))


def test_stack_outputs_name_what_an_operator_needs(template):
    assert set(template.to_json()["Outputs"]) == {
        "InputBucketName",
        "OutputBucketName",
        "JobTableName",
        "StateMachineArn",
        "QueueUrl",
        "DeadLetterQueueUrl",
        "OpenAIApiKeySecretArn",
        "DashboardName",
        "AlarmTopicArn",
    }


# --- settings and cdk-nag -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"batchline": {**json.loads(CDK_JSON.read_text())["context"]["batchline"], "map_max_concurrency": 0}},
        {"batchline.map_max_concurrency": "0"},  # as `cdk synth -c batchline.map_max_concurrency=0` passes it
    ],
)
def test_a_wrong_setting_fails_the_app_naming_the_field(app, override):
    # `app` first: jsii is then already running, so this costs no second start-up.
    with pytest.raises(SettingsError, match="map_max_concurrency"):
        build_app({**cdk_context(), **override})


def test_cdk_nag_finds_nothing_unacknowledged(app, template):
    report = AwsSolutionsChecks().validate_scope(app)
    findings = [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations]
    assert report.success, findings
    app.synth()  # the same checks run at synth; an unacknowledged finding would raise here


def test_every_acknowledgement_carries_a_reason(resources):
    acknowledged = [
        rule
        for resource in resources.values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert acknowledged
    for rule in acknowledged:
        assert rule["id"].startswith("AwsSolutions-")
        assert len(rule["reason"]) >= 60, rule


# --- the layer's recipe ----------------------------------------------------------------------------


def test_layer_requirements_are_the_runtime_dependencies_only():
    if not (REPO_ROOT / ".tools" / "bin" / "uv").exists():
        pytest.skip("uv is installed by `make install`")
    names = {re.split(r"[=; ]", line, maxsplit=1)[0] for line in runtime_requirements().splitlines() if line}
    for runtime in ("aws-lambda-powertools", "boto3", "openai", "orjson", "pydantic", "tiktoken"):
        assert runtime in names
    for never_shipped in ("batchline", "moto", "aws-cdk-lib", "cdk-nag", "cfn-lint", "pytest", "ruff", "typer",
                          "rich", "werkzeug", "bpe-openai"):  # fmt: skip
        assert never_shipped not in names


def test_the_functions_dependencies_are_pinned_as_the_command_line_pins_them():
    # The layer holds the `lambda` group; the installed `batchline` the project's dependencies:
    # one pin each, so that the functions run in AWS what the local run runs here.
    project = tomllib.loads(PYPROJECT.read_text())
    assert set(project["dependency-groups"]["lambda"]) <= set(project["project"]["dependencies"])


def test_layer_build_stops_with_the_fix_when_encodings_are_missing(tmp_path):
    with pytest.raises(LayerBuildError, match="make install"):
        verified_encodings(tmp_path)


def test_the_layer_leaves_out_what_the_functions_never_load_and_keeps_what_they_do(tmp_path):
    from infra.lambda_layer import prune_layer

    site = tmp_path / "python"
    kept = ["pyarrow/libarrow.so.2600", "pyarrow/libarrow_python.so.2600", "pyarrow/_parquet.cpython-312-x.so",
            "pyarrow/libarrow_substrait.so.2600", "pyarrow/parquet/core.py", "boto3/__init__.py"]  # fmt: skip
    pruned = [
        "pyarrow/libarrow_flight.so.2600",
        "pyarrow/_flight.cpython-312-x.so",
        "pyarrow/libarrow_s3.so.2600",
        "pyarrow/_s3fs.cpython-312-x.so",
        "pyarrow/libarrow_python.so",
        "pyarrow/libarrow_python.so.2600.1.0",
        "pyarrow/include/arrow/api.h",
        "pyarrow/tests/test_io.py",
        "pyarrow/lib.pyx",
        "pyarrow/includes/x.pxd",
    ]
    for name in kept + pruned:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x" * 10)

    removed = prune_layer(site)

    assert sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()) == sorted(kept)
    assert removed == 10 * len(pruned)

"""The synthesized stack is what the design promises: private storage, one least-privilege role per
function, the state machine and trigger built from topology, the secret, monitoring, cdk-nag clean.

The app is built once for the module (jsii start-up is slow) with bundling skipped; `make synth`
builds the layer for real.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template
from batchline.settings import Settings, SettingsError, load_settings, settings_from_cdk_json
from batchline.topology import (
    EXECUTION_INPUT_PATHS,
    FUNCTIONS,
    STATE_MACHINE_ASL,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    execution_input_template,
    object_created_pattern,
)
from cdk_nag import AwsSolutionsChecks

from app import build_app
from infra.constants import STACK_ID, STAGING_RETENTION_DAYS, TABLE_TTL_ATTRIBUTE
from infra.lambda_layer import LayerBuildError, runtime_requirements, verified_encodings

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"
NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
HANDLERS = {spec.handler: spec.name for spec in FUNCTIONS}


def cdk_context() -> dict:
    return {**json.loads(CDK_JSON.read_text())["context"], **NO_BUNDLING}


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
            "ExpirationInDays": STAGING_RETENTION_DAYS,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "Status": "Enabled",
        }
    ]
    assert not settings.output_prefix.startswith("staging")  # results are never expired
    assert any("AbortIncompleteMultipartUpload" in rule for rule in rules)


def test_job_table_uses_topology_keys_on_demand_with_pitr_and_ttl(template, resources):
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert list(tables) == [output_ref(template, "JobTableName")]
    props = next(iter(tables.values()))["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
        {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
    ]
    assert sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
        {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": TABLE_TTL_ATTRIBUTE, "Enabled": True}


# --- functions ----------------------------------------------------------------------------------


def test_one_function_per_topology_entry_sized_from_settings(resources, settings):
    functions = functions_by_name(resources)
    assert sorted(functions) == sorted(spec.name for spec in FUNCTIONS)
    (layer_id,) = of_type(resources, "AWS::Lambda::LayerVersion")
    for _, props in functions.values():
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["x86_64"]
        assert props["MemorySize"] == settings.functions.memory_mb
        assert props["Timeout"] == settings.functions.timeout_seconds
        assert props["EphemeralStorage"] == {"Size": settings.functions.ephemeral_storage_mb}
        assert props["Layers"] == [{"Ref": layer_id}]
    roles = {props["Role"]["Fn::GetAtt"][0] for _, props in functions.values()}
    assert len(roles) == len(FUNCTIONS)  # one role per function


def test_every_function_gets_the_deployed_settings_and_resource_names(template, resources, settings):
    for _, props in functions_by_name(resources).values():
        env = props["Environment"]["Variables"]
        assert load_settings(json.loads(env["BATCHLINE_SETTINGS"])) == settings
        assert env["TABLE_NAME"] == {"Ref": output_ref(template, "JobTableName")}
        assert env["OUTPUT_BUCKET"] == {"Ref": output_ref(template, "OutputBucketName")}
        assert env["POWERTOOLS_SERVICE_NAME"] == "batchline"
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
        ("dynamodb:PutItem", "table"),
        ("dynamodb:UpdateItem", "table"),
        ("dynamodb:BatchWriteItem", "table"),
    },
    "submit": {
        ("s3:GetObject", "output/staging/*"),
        ("dynamodb:GetItem", "table"),
        ("dynamodb:UpdateItem", "table"),
        ("secretsmanager:GetSecretValue", "secret"),
    },
    "check": {("dynamodb:UpdateItem", "table"), ("secretsmanager:GetSecretValue", "secret")},
    "collect": {
        ("s3:GetObject", "output/staging/*"),
        ("s3:PutObject", "output/staging/*"),
        ("s3:AbortMultipartUpload", "output/staging/*"),
        ("dynamodb:UpdateItem", "table"),
        ("secretsmanager:GetSecretValue", "secret"),
    },
    "shard_failed": {("dynamodb:UpdateItem", "table")},
    "finalize": {
        ("s3:GetObject", "input/*"),
        ("s3:GetObject", "output/staging/*"),
        ("s3:ListBucket", "output"),
        ("s3:PutObject", "output/jobs/*"),
        ("s3:AbortMultipartUpload", "output/jobs/*"),
        ("dynamodb:GetItem", "table"),
        ("dynamodb:Query", "table"),
        ("dynamodb:UpdateItem", "table"),
    },
}
WRITE_OWN_LOGS = {("logs:CreateLogStream", "own log group"), ("logs:PutLogEvents", "own log group")}


def test_each_function_role_holds_exactly_what_its_handler_uses(template, resources):
    names = {
        output_ref(template, "InputBucketName"): "input",
        output_ref(template, "OutputBucketName"): "output",
        output_ref(template, "JobTableName"): "table",
        output_ref(template, "OpenAIApiKeySecretArn"): "secret",
    }

    def describe(resource, own_logs: str) -> str:
        if isinstance(resource, str):
            return resource
        if "Fn::Join" in resource:
            return "".join(describe(part, own_logs) for part in resource["Fn::Join"][1])
        logical_id = resource["Ref"] if "Ref" in resource else resource["Fn::GetAtt"][0]
        return "own log group" if logical_id == own_logs else names.get(logical_id, logical_id)

    assert set(EXPECTED_ACCESS) == {spec.name for spec in FUNCTIONS}
    for name, (_, props) in functions_by_name(resources).items():
        role_id = props["Role"]["Fn::GetAtt"][0]
        own_logs = props["LoggingConfig"]["LogGroup"]["Ref"]
        granted = set()
        for statement in statements_of_role(resources, role_id):
            assert statement["Effect"] == "Allow" and "Condition" not in statement
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    granted.add((action, describe(resource, own_logs)))
        assert granted == EXPECTED_ACCESS[name] | WRITE_OWN_LOGS, name
        role = resources[role_id]["Properties"]
        assert "ManagedPolicyArns" not in role  # no AWS managed policy
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
        ]


# --- orchestration ------------------------------------------------------------------------------


def test_state_machine_substitutions_are_exactly_the_asl_placeholders(template, resources, settings):
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", STATE_MACHINE_ASL.read_text()))
    assert set(substitutions) == placeholders
    assert substitutions["MapMaxConcurrency"] == str(settings.map_max_concurrency)
    functions = functions_by_name(resources)
    for spec in FUNCTIONS:
        assert substitutions[spec.substitution] == {"Fn::GetAtt": [functions[spec.name][0], "Arn"]}


def test_state_machine_logs_all_events_traces_and_may_invoke_exactly_the_functions(resources):
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["TracingConfiguration"] == {"Enabled": True}
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    invoke = [s for s in statements_of_role(resources, role_id) if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert len(invoke) == 1 and as_list(invoke[0]["Action"]) == ["lambda:InvokeFunction"]
    expected = [{"Fn::GetAtt": [logical_id, "Arn"]} for logical_id, _ in functions_by_name(resources).values()]
    assert sorted(map(json.dumps, invoke[0]["Resource"])) == sorted(map(json.dumps, expected))


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
    assert readers == {"submit", "check", "collect"}


def test_failed_jobs_raise_an_alarm_on_the_topic_and_the_dashboard_shows_the_cold_path(template, resources):
    (topic_id,) = of_type(resources, "AWS::SNS::Topic")
    assert output_ref(template, "AlarmTopicArn") == topic_id
    (alarm,) = of_type(resources, "AWS::CloudWatch::Alarm").values()
    props = alarm["Properties"]
    assert props["AlarmActions"] == [{"Ref": topic_id}]
    metric = props["Metrics"][0]["MetricStat"]["Metric"]
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/States", "ExecutionsFailed")
    assert props["Threshold"] == 1 and props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

    (dashboard_id, dashboard) = next(iter(of_type(resources, "AWS::CloudWatch::Dashboard").items()))
    assert output_ref(template, "DashboardName") == dashboard_id
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric_name in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ReadThrottleEvents",
                        "WriteThrottleEvents"):  # fmt: skip
        assert metric_name in body
    assert body.count('\\"Errors\\"') == len(FUNCTIONS)


def test_stack_outputs_name_what_an_operator_needs(template):
    assert set(template.to_json()["Outputs"]) == {
        "InputBucketName",
        "OutputBucketName",
        "JobTableName",
        "StateMachineArn",
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
                          "bpe-openai"):  # fmt: skip
        assert never_shipped not in names


def test_layer_build_stops_with_the_fix_when_encodings_are_missing(tmp_path):
    with pytest.raises(LayerBuildError, match="make install"):
        verified_encodings(tmp_path)

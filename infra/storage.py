"""Where jobs arrive, where their files go, and the table that tracks them.

Access is granted per need (`grant_*`), never as a whole bucket or table: each function's role gets
only the prefixes and actions its handler uses.

What the buckets keep (``retention.*``): both are versioned, and an old version (an upload replaced
or deleted, a resumed job's earlier results) expires after ``noncurrent_days``, the delete markers
left alone with it; a multipart upload left open is aborted after ``incomplete_upload_days``. Under
staging/, working files expire after ``staging_days``. The current results and, unless
``input_days`` is set, the uploads themselves are kept until someone deletes them: they are what
the user asked for and was given.

Encryption: S3-managed keys and DynamoDB's AWS-owned key, or the customer-managed key (``DataKey``)
when one is set: SSE-KMS with S3 Bucket Keys (one KMS call per bucket key, not per object) on both
buckets, and the table's own key. The access log bucket stays S3-managed: S3 server access logging
delivers only to buckets encrypted that way. Each ``grant_*`` adds the key use its calls need.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from batchline.settings import RetentionSettings
from batchline.topology import (
    JOB_LIST_ATTRIBUTE,
    JOB_START_ATTRIBUTE,
    JOBS_BY_START_INDEX,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
)
from constructs import Construct

from infra.constants import ACCESS_LOG_RETENTION_DAYS, TABLE_TTL_ATTRIBUTE
from infra.encryption import DataKey

# What S3 needs of the key, per object action, under SSE-KMS: reading decrypts the object's data key,
# writing generates one, and a multipart upload (the streamed writers, who may abort one) also decrypts
# it to complete the upload.
_S3_KEY_USE = {
    "s3:GetObject": {"kms:Decrypt"},
    "s3:PutObject": {"kms:GenerateDataKey"},
    "s3:AbortMultipartUpload": {"kms:Decrypt"},
}
# DynamoDB checks the caller may use the table's key: reading needs Decrypt (and DescribeKey), writing
# also Encrypt and GenerateDataKey (the key use CDK's own table grants add, wildcards spelled out).
_TABLE_READS = {"GetItem", "BatchGetItem", "Query"}
_TABLE_KEY_READ = {"kms:Decrypt", "kms:DescribeKey"}
_TABLE_KEY_WRITE = _TABLE_KEY_READ | {"kms:Encrypt", "kms:GenerateDataKey"}


def _private_bucket(scope: Construct, construct_id: str, key: DataKey | None = None, **props) -> s3.Bucket:
    """S3-managed encryption, or SSE-KMS with a Bucket Key under the customer-managed key when there is one."""
    if key is not None and key.key is not None:
        encryption = {"encryption": s3.BucketEncryption.KMS, "encryption_key": key.key, "bucket_key_enabled": True}
    else:
        encryption = {"encryption": s3.BucketEncryption.S3_MANAGED}
    return s3.Bucket(
        scope,
        construct_id,
        **encryption,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        removal_policy=RemovalPolicy.RETAIN,
        **props,
    )


def _version_rules(retention: RetentionSettings) -> list[s3.LifecycleRule]:
    """Both buckets: old versions expire, then their lone delete markers go; open uploads are aborted."""
    return [
        s3.LifecycleRule(
            id="expire-old-versions", noncurrent_version_expiration=Duration.days(retention.noncurrent_days)
        ),
        # S3 refuses a delete-marker cleanup in a rule that also expires current objects by age.
        s3.LifecycleRule(id="remove-lone-delete-markers", expired_object_delete_marker=True),
        s3.LifecycleRule(
            id="abort-incomplete-uploads",
            abort_incomplete_multipart_upload_after=Duration.days(retention.incomplete_upload_days),
        ),
    ]


class Storage(Construct):
    """The input bucket (its new objects start jobs), the output bucket and the job table."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        output_prefix: str,
        staging_prefix: str,
        retention: RetentionSettings,
        key: DataKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self._key = key
        self._output_prefix = output_prefix.strip("/")
        self._staging_prefix = staging_prefix.strip("/")

        self.access_logs = _private_bucket(
            self,
            "AccessLogs",
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(ACCESS_LOG_RETENTION_DAYS))
            ],
        )
        Validations.of(self.access_logs).acknowledge(
            Acknowledgment(
                id="AwsSolutions-S1",
                reason="This bucket is the server access log destination of the input and output buckets; "
                "logging it into itself would log its own log deliveries without end.",
            )
        )

        self.input_bucket = _private_bucket(
            self,
            "Input",
            key,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="input/",
            lifecycle_rules=[
                *_version_rules(retention),
                *(
                    [s3.LifecycleRule(id="expire-uploads", expiration=Duration.days(retention.input_days))]
                    if retention.input_days is not None
                    else []
                ),
            ],
        )
        # Native EventBridge delivery on the bucket itself. The L2 `event_bridge_enabled` flag would add
        # a custom-resource Lambda (and its managed policy and wildcard grant) just to set this property.
        input_resource = self.input_bucket.node.default_child
        assert isinstance(input_resource, s3.CfnBucket)
        input_resource.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(event_bridge_enabled=True)
        )

        self.output_bucket = _private_bucket(
            self,
            "Output",
            key,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="output/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-staging",
                    prefix=f"{self._staging_prefix}/",
                    expiration=Duration.days(retention.staging_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                *_version_rules(retention),
            ],
        )

        self.table = dynamodb.Table(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name=TABLE_PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=TABLE_SORT_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TABLE_TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.RETAIN,
            **(
                {"encryption": dynamodb.TableEncryption.CUSTOMER_MANAGED, "encryption_key": key.key}
                if key.key is not None
                else {}
            ),
        )
        self.table.add_global_secondary_index(
            index_name=JOBS_BY_START_INDEX,
            partition_key=dynamodb.Attribute(name=JOB_LIST_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=JOB_START_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )

    # --- S3: one grant per way a handler touches a prefix -------------------------------------------

    def grant_read_input(self, grantee: iam.IGrantable) -> iam.Grant:
        """GetObject, which also covers HeadObject, on the uploaded input files."""
        return self._allow_objects(
            grantee,
            ["s3:GetObject"],
            self.input_bucket,
            "*",
            "A job's input is whatever key the user uploaded, known only when its event arrives; "
            "the grant is read-only (GetObject, which HeadObject needs) on the input bucket's objects.",
        )

    def grant_read_staging(self, grantee: iam.IGrantable, keys: str = "*", *, what: str = "") -> iam.Grant:
        """GetObject on the working files under staging/ that `keys` matches (all of them by default)."""
        return self._allow_staging(grantee, ["s3:GetObject"], keys, what)

    def grant_write_staging(self, grantee: iam.IGrantable, keys: str = "*", *, what: str = "") -> iam.Grant:
        """For streamed writers: PutObject covers the multipart calls too; aborting an upload is its own action."""
        return self._allow_staging(grantee, ["s3:PutObject", "s3:AbortMultipartUpload"], keys, what)

    def grant_put_staging(self, grantee: iam.IGrantable, keys: str, *, what: str) -> iam.Grant:
        """For objects written whole with one PutObject: no multipart upload to abort."""
        return self._allow_staging(grantee, ["s3:PutObject"], keys, what)

    def grant_write_results(self, grantee: iam.IGrantable) -> iam.Grant:
        return self._allow_objects(
            grantee,
            ["s3:PutObject", "s3:AbortMultipartUpload"],
            self.output_bucket,
            f"{self._output_prefix}/*",
            f"A job's results, errors and summary are written under {self._output_prefix}/<job_id>/, "
            "the job id being made at run time from the input's name and ETag; the grant is limited "
            "to that prefix and to writing.",
        )

    def grant_probe_output(self, grantee: iam.IGrantable) -> iam.Grant:
        """ListBucket, so that HeadObject on a missing key answers 404 (absent) rather than 403."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:ListBucket"], resource_arns=[self.output_bucket.bucket_arn]
        )

    # --- DynamoDB ---------------------------------------------------------------------------------

    def grant_table(self, grantee: iam.IGrantable, actions: Sequence[str]) -> iam.Grant:
        """Exactly these item actions on the job table (it has no index), and the key use they need."""
        self._key.grant_via(grantee, "dynamodb", _TABLE_KEY_READ if set(actions) <= _TABLE_READS else _TABLE_KEY_WRITE)
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=[f"dynamodb:{action}" for action in actions], resource_arns=[self.table.table_arn]
        )

    def _allow_staging(self, grantee: iam.IGrantable, actions: list[str], keys: str, what: str) -> iam.Grant:
        """`what` says which working files a grant narrower than the whole prefix is for."""
        pattern = f"{self._staging_prefix}/{keys}"
        if keys == "*":
            reason = (
                f"Working files live under {self._staging_prefix}/<job_id>/..., their names made at run time; "
                "the grant is limited to that prefix (which a lifecycle rule expires) and to the listed actions."
            )
        else:
            if not what:
                raise ValueError(f"say which working files the grant on {pattern} is for")
            reason = (
                f"{what}: their keys ({pattern}) hold the job id (and a shard id or line number), known "
                "only at run time; the grant is limited to those keys, which a lifecycle rule expires, and "
                "to the listed actions."
            )
        return self._allow_objects(grantee, actions, self.output_bucket, pattern, reason)

    def _allow_objects(
        self, grantee: iam.IGrantable, actions: list[str], bucket: s3.Bucket, pattern: str, reason: str
    ) -> iam.Grant:
        """Grant on the objects matching `pattern` (and the key use it needs); acknowledge that one wildcard."""
        self._key.grant_via(grantee, "s3", set().union(*(_S3_KEY_USE.get(action, set()) for action in actions)))
        grant = iam.Grant.add_to_principal(
            grantee=grantee, actions=actions, resource_arns=[bucket.arn_for_objects(pattern)]
        )
        principal = grantee.grant_principal
        if isinstance(principal, Construct):
            stack = Stack.of(bucket)
            bucket_id = stack.resolve(stack.get_logical_id(bucket.node.default_child))
            Validations.of(principal).acknowledge(
                Acknowledgment(id=f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{pattern}]", reason=reason)
            )
        return grant

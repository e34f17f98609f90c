"""The optional customer-managed KMS key of the buckets, the table, the queues and the alarm topic.

``encryption.create_kms_key`` makes the stack create one (rotated yearly, retained with the data it
protects); ``encryption.kms_key_arn`` names an existing one in the stack's region. Neither: no key,
and every resource keeps AWS's own encryption (S3-managed, AWS-owned), as before.

With a key, a role may use it only on behalf of the services its handler calls (``kms:ViaService``)
and only for what its calls to that service need, granted where the call's own permission is
granted (the storage and queue constructs): one statement per role and service, however many grants
add to it.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Annotations, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from batchline.settings import EncryptionSettings
from constructs import Construct


class DataKey(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, encryption: EncryptionSettings) -> None:
        super().__init__(scope, construct_id)
        self.key: kms.IKey | None = None
        self._created = False
        if encryption.create_kms_key:
            self.key = kms.Key(
                self,
                "Key",
                description="batchline: the input and output buckets, the job table, the realtime queues and "
                "the alarm topic",
                enable_key_rotation=True,
                # Deleting the key would make every object, item and message it encrypted unreadable.
                removal_policy=RemovalPolicy.RETAIN,
            )
            self._created = True
        elif encryption.kms_key_arn:
            self.key = kms.Key.from_key_arn(self, "Imported", encryption.kms_key_arn)
        # (principal path, service) -> (its statement, the actions granted so far)
        self._statements: dict[tuple[str, str], tuple[iam.PolicyStatement, set[str]]] = {}

    def grant_via(self, grantee: iam.IGrantable, service: str, actions: Iterable[str]) -> None:
        """Let `grantee` use the key for `actions`, only when `service` (s3, sqs, dynamodb) calls KMS for it."""
        actions = set(actions)
        if self.key is None or not actions:
            return
        principal = grantee.grant_principal
        if not isinstance(principal, Construct):
            raise TypeError(f"grant the key to a role of this stack, not {principal}")
        identity = (principal.node.path, service)
        if identity not in self._statements:
            statement = iam.PolicyStatement(
                actions=sorted(actions),
                resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"{service}.{Stack.of(self).region}.amazonaws.com"}},
            )
            self._statements[identity] = (statement, set(actions))
            principal.add_to_principal_policy(statement)
            return
        statement, granted = self._statements[identity]
        statement.add_actions(*sorted(actions - granted))
        granted |= actions

    def allow_service(self, service_principal: str, actions: list[str], *, sid: str, why: str) -> None:
        """A key policy statement for an AWS service that uses the key itself (not on a role's behalf).

        An imported key's policy is not the stack's to change: the synth warns with what to add.
        """
        if self.key is None:
            return
        if self._created:
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=sid,
                    principals=[iam.ServicePrincipal(service_principal)],
                    actions=actions,
                    resources=["*"],  # in a key policy, "*" is this key
                )
            )
            return
        Annotations.of(self).add_warning_v2(
            f"batchline:KeyPolicy{sid}",
            f"The key policy of {self.key.key_arn} must allow {service_principal} {', '.join(actions)} "
            f"({why}); the stack cannot change an existing key's policy.",
        )

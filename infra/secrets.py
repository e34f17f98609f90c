"""The OpenAI API key, kept in Secrets Manager and never in the template or an environment variable.

The stack creates the secret with a random placeholder; the operator puts the real key in after
deploying (``aws secretsmanager put-secret-value``). Functions receive only the secret's ARN.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct


class OpenAIKeySecret(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="OpenAI API key used by batchline's submit, check and collect functions. "
            "Put the key in after deploy: aws secretsmanager put-secret-value --secret-id <arn> ...",
        )
        Validations.of(self.secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="The value is an API key issued by OpenAI: no rotation Lambda can mint a new one. "
                "It is rotated by hand in the OpenAI dashboard, then stored with put-secret-value.",
            )
        )

    @property
    def secret_arn(self) -> str:
        return self.secret.secret_arn

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """GetSecretValue on this secret only: all the functions need to read the key."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["secretsmanager:GetSecretValue"], resource_arns=[self.secret.secret_arn]
        )

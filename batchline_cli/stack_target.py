"""Which stack the job commands talk to: a deployed one, or the one `batchline local up` runs.

A deployed stack is found by name: its CloudFormation outputs name the buckets, the table and
the state machine. A local stack is found through the state file `batchline local up` writes
while it runs (moto's endpoint, the emulator's address, the same resource names). Either way the
commands then make the same boto3 calls; only the endpoint and the credentials differ.

Choice, in order: ``--stack NAME``; ``--local``; otherwise the local stack when its state file
exists, else the deployed stack "Batchline".
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions

DEFAULT_STACK = "Batchline"
DEFAULT_STATE_FILE = Path(".batchline") / "local.json"
STATE_FILE_ENV = "BATCHLINE_LOCAL_STATE"
STATE_KIND = "batchline-local-stack"

# The CloudFormation outputs the commands need, by the name they are used under.
REQUIRED_OUTPUTS = {
    "input_bucket": "InputBucketName",
    "output_bucket": "OutputBucketName",
    "table": "JobTableName",
    "state_machine_arn": "StateMachineArn",
}
SECRET_OUTPUT = "OpenAIApiKeySecretArn"

WHAT_TO_DO = "deploy it with `npx cdk deploy` (see README), or run `batchline local up` for a local stack"


class TargetError(Exception):
    """No stack to talk to; the message says what to do next."""


@dataclass(frozen=True)
class StackTarget:
    label: str  # said in messages: "stack Batchline (eu-west-1)", "the local stack at http://..."
    input_bucket: str
    output_bucket: str
    table: str
    state_machine_arn: str
    output_prefix: str
    region: str | None = None
    endpoint_url: str | None = None  # moto's, for the local stack; None for AWS itself
    openai_base_url: str | None = None  # the emulator's locally; OPENAI_BASE_URL (or OpenAI) when deployed
    openai_api_key: str | None = None  # the emulator's dummy key; a real key is never written to a file
    openai_key_secret_arn: str | None = None  # the deployed stack's secret, read when no OPENAI_API_KEY

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    @cached_property
    def session(self) -> boto3.Session:
        if self.is_local:  # moto takes any credentials; never reach for the user's real ones
            return boto3.Session(
                aws_access_key_id="local",
                aws_secret_access_key="local",
                aws_session_token="local",
                region_name=self.region,
            )
        return boto3.Session(region_name=self.region)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    def resource(self, service: str) -> Any:
        return self.session.resource(service, endpoint_url=self.endpoint_url)


# -- the local stack's state file ----------------------------------------------------------------
def state_file_path(given: Path | None) -> Path:
    return given or Path(os.environ.get(STATE_FILE_ENV) or DEFAULT_STATE_FILE)


def write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"kind": STATE_KIND, **state}, indent=2) + "\n")
    scratch.replace(path)  # readers never see half a file


def read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path} is not a state file of `batchline local up` ({exc}); delete it") from None
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
        raise TargetError(f"{path} is not a state file of `batchline local up`; delete it")
    return state


def is_listening(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def local_target(path: Path) -> StackTarget:
    state = read_state(path)
    if state is None:
        raise TargetError(
            f"no local stack: {path} does not exist. Start one with `batchline local up` (and keep it running), "
            "or pass --stack NAME for a deployed stack"
        )
    if not is_listening(state["endpoint_url"]):
        raise TargetError(
            f"the local stack in {path} is not running (nothing answers at {state['endpoint_url']}; "
            f"it was process {state.get('pid')}). Start it again with `batchline local up` (a local stack keeps "
            f"nothing once stopped), delete {path}, or pass --stack NAME for a deployed stack"
        )
    return StackTarget(
        label=f"the local stack at {state['endpoint_url']}",
        input_bucket=state["input_bucket"],
        output_bucket=state["output_bucket"],
        table=state["table"],
        state_machine_arn=state["state_machine_arn"],
        output_prefix=state["output_prefix"],
        region=state["region"],
        endpoint_url=state["endpoint_url"],
        openai_base_url=state.get("openai_base_url"),
        openai_api_key=state.get("openai_api_key"),
    )


# -- a deployed stack -----------------------------------------------------------------------------
def region_from_environment(given: str | None) -> str | None:
    """--region, else AWS_REGION (what the AWS CLI and SDKs read first), else AWS_DEFAULT_REGION and
    the profile's region (boto3's own chain, which reads only those)."""
    return given or os.environ.get("AWS_REGION") or None


def deployed_target(stack: str, *, region: str | None, output_prefix: str) -> StackTarget:
    session = boto3.Session(region_name=region_from_environment(region))
    where = session.region_name or "no region"
    try:
        found = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except botocore.exceptions.NoRegionError:
        raise TargetError(
            f"no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION); or {WHAT_TO_DO}"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise TargetError(
            f"no AWS credentials to find stack {stack!r}: configure them (aws configure, AWS_PROFILE), or run "
            "`batchline local up` for a local stack"
        ) from None
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            raise TargetError(f"no stack named {stack!r} in {where}: {WHAT_TO_DO}; or pass --stack/--region") from None
        raise TargetError(f"reading stack {stack!r} in {where} failed: {error.get('Message') or exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise TargetError(f"reading stack {stack!r} in {where} failed: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (found[0].get("Outputs") or [])} if found else {}
    missing = sorted(name for name in REQUIRED_OUTPUTS.values() if name not in outputs)
    if missing:
        raise TargetError(
            f"stack {stack!r} in {where} has no output {', '.join(missing)}: is it a batchline stack? Deploy this "
            "version with `npx cdk deploy`"
        )
    return StackTarget(
        label=f"stack {stack} ({where})",
        output_prefix=output_prefix,
        region=session.region_name,
        openai_base_url=os.environ.get("OPENAI_BASE_URL") or None,
        openai_key_secret_arn=outputs.get(SECRET_OUTPUT),
        **{field: outputs[name] for field, name in REQUIRED_OUTPUTS.items()},
    )


def resolve_target(
    *, stack: str | None, local: bool, state_file: Path | None, region: str | None, output_prefix: str
) -> StackTarget:
    """The stack the user means: see the module's docstring for the order."""
    path = state_file_path(state_file)
    if stack and local:
        raise TargetError("--stack and --local name two different stacks: pass one of them")
    if stack:
        return deployed_target(stack, region=region, output_prefix=output_prefix)
    if local or path.exists():
        return local_target(path)
    return deployed_target(DEFAULT_STACK, region=region, output_prefix=output_prefix)

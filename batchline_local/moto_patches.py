"""Teach moto, running in this process, the two things the local run needs from AWS.

1. Lambda without Docker: moto's simple Lambda backend only echoes its input. Here an invoke
   runs the function's real handler ("module.function") in-process, with the function's
   environment and a Lambda context, and reports an exception the way Lambda does (header
   ``x-amz-function-error: Unhandled`` and an ``errorType``), so the state machine's Retry and
   Catch see the real error class. A crash a test armed (crashes module) goes through the same
   path: an ``InjectedCrash`` before or after the handler, reported as the function's own error.
2. Atomic conditional writes: DynamoDB applies a conditional update atomically; moto, serving
   many threads, checks and writes without a lock, so two workers could both pass a rate-limit
   condition. Here every write to a moto table holds one lock, as DynamoDB's guarantee implies.
3. EventBridge to Step Functions: moto delivers S3's object-created events to rules but has no
   ``states`` target. Here such a target starts an execution with the rule's InputTransformer
   applied, exactly the wiring the deployed stack has.
4. The ``states:startExecution`` task (the state machine's HandOver): moto passes the ASL's
   parameter names (StateMachineArn, Input, Name) to boto3 unchanged, and boto3 knows them as
   stateMachineArn, input and name, and names an unnamed execution "None" (every one the same).
   Here they are renamed, and an execution gets a UUID for a name, as Step Functions does.
5. One Object Created event per multipart upload, as S3 sends (moto sent two).
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchline_local import crashes

_ENV_LOCK = threading.Lock()
_applied_env: dict[str, str] = {}
_original_env: dict[str, str | None] = {}
_on_env_change: list[Callable[[], None]] = []
_installed = False


@dataclass
class LocalLambdaContext:
    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def on_environment_change(callback: Callable[[], None]) -> None:
    """Run `callback` whenever a function's environment differs from the one last applied."""
    _on_env_change.append(callback)


def _apply_environment(variables: dict[str, str]) -> None:
    global _applied_env
    with _ENV_LOCK:
        if variables == _applied_env:
            return
        for name in variables:
            _original_env.setdefault(name, os.environ.get(name))
        os.environ.update(variables)
        _applied_env = dict(variables)
        for callback in _on_env_change:
            callback()


def restore_environment() -> None:
    """Undo what functions' environments did to this process (a local run is over)."""
    global _applied_env
    with _ENV_LOCK:
        for name, value in _original_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _original_env.clear()
        _applied_env = {}


def _resolve(handler: str) -> Callable[[dict, Any], Any]:
    module, _, function = handler.rpartition(".")
    return getattr(importlib.import_module(module), function)


def _invoke_in_process(self, function_name, qualifier, body, headers, response_headers):  # noqa: ANN001
    fn = self.get_function(function_name, qualifier)
    _apply_environment(fn.environment_vars or {})
    context = LocalLambdaContext(
        function_name=fn.function_name,
        memory_limit_in_mb=fn.memory_size,
        invoked_function_arn=fn.function_arn,
        aws_request_id=str(uuid.uuid4()),
    )
    event = json.loads(body) if body else {}
    handler = _resolve(fn.handler)
    try:
        result = crashes.run_handler(fn.function_name, lambda: handler(event, context))
    except Exception as exc:  # reported to the caller exactly as Lambda reports it
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(
            {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_exception(exc),
            }
        ).encode()
    return json.dumps(result).encode()


def _send_to_targets_with_states(original: Callable) -> Callable:
    from moto.events.utils import EventTemplateParser
    from moto.stepfunctions.responses import get_backend as stepfunctions_backend
    from moto.utilities.arns import parse_arn

    def send_to_targets(self, original_event: dict, transform_input: bool = True) -> None:  # noqa: ANN001
        others = [t for t in self.targets if parse_arn(t["Arn"]).service != "states"]
        states = [t for t in self.targets if parse_arn(t["Arn"]).service == "states"]
        if states and self.event_pattern.matches_event(original_event):
            for target in states:
                transformer = target.get("InputTransformer", {})
                execution_input = EventTemplateParser.parse(
                    input_template=transformer.get("InputTemplate"),
                    input_paths_map=transformer.get("InputPathsMap", {}),
                    # S3's events reach rules without the ingestion time the parser expects.
                    event={"ingestion-time": time.time(), **original_event},
                )
                arn = parse_arn(target["Arn"])
                backend = stepfunctions_backend(arn.account, arn.region)
                payload = execution_input if isinstance(execution_input, str) else json.dumps(execution_input)
                # EventBridge names each execution uniquely; the same file uploaded again (a resume)
                # must start a new execution, not collide with the first one's name.
                backend.start_execution(target["Arn"], name=str(uuid.uuid4()), execution_input=payload)
        if others:
            saved = self.targets
            self.targets = others
            try:
                original(self, original_event, transform_input)
            finally:
                self.targets = saved

    return send_to_targets


_DYNAMODB_WRITE_LOCK = threading.RLock()


def _atomic(write: Callable) -> Callable:
    def locked(*args, **kwargs):  # noqa: ANN002, ANN003
        with _DYNAMODB_WRITE_LOCK:
            return write(*args, **kwargs)

    return locked


def _one_event_per_multipart_upload(put_object: Callable) -> Callable:
    """moto's CompleteMultipartUpload stores the object with put_object, which sends an Object
    Created event, then sends its own: two events, so two executions, for one upload. S3 sends one."""

    def put_without_a_second_event(*args, **kwargs):  # noqa: ANN002, ANN003
        if kwargs.get("multipart") is not None:
            kwargs["disable_notification"] = True
        return put_object(*args, **kwargs)

    return put_without_a_second_event


def _start_execution_with_api_names(eval_service_task: Callable) -> Callable:
    def renamed(self, env, resource_runtime_part, normalised_parameters, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if self._get_boto_service_action() == "start_execution":
            normalised_parameters = {key[:1].lower() + key[1:]: value for key, value in normalised_parameters.items()}
            normalised_parameters.setdefault("name", str(uuid.uuid4()))  # Step Functions names it so; moto: "None"
        return eval_service_task(self, env, resource_runtime_part, normalised_parameters, *args, **kwargs)

    return renamed


def install() -> None:
    """Apply the patches once per process."""
    global _installed
    if _installed:
        return
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.dynamodb.models import DynamoDBBackend
    from moto.events.models import Rule
    from moto.s3.models import S3Backend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    LambdaSimpleBackend.invoke = _invoke_in_process
    S3Backend.put_object = _one_event_per_multipart_upload(S3Backend.put_object)
    Rule.send_to_targets = _send_to_targets_with_states(Rule.send_to_targets)
    StateTaskServiceSfn._eval_service_task = _start_execution_with_api_names(StateTaskServiceSfn._eval_service_task)
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))
    _installed = True

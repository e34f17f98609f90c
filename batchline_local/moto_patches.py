"""Teach moto, running in this process, what the local run needs from AWS.

1. Lambda without Docker: moto's simple Lambda backend only echoes its input. Here an invoke
   runs the function's real handler ("module.function") in-process, with the function's
   environment and a Lambda context, and reports an exception the way Lambda does (header
   ``x-amz-function-error: Unhandled`` and an ``errorType``), so the state machine's Retry and
   Catch see the real error class. A crash a test armed (crashes module) goes through the same
   path: an ``InjectedCrash`` before or after the handler, reported as the function's own error.
2. Atomic conditional writes, and reads that do not break under writes: DynamoDB applies a
   conditional update atomically; moto, serving many threads, checks and writes without a lock,
   so two workers could both pass a rate-limit condition. This used to be one lock around every
   write, which serialised all tables and still left reads unguarded: a scan, a query, or a
   transaction's copy of the table iterated moto's item dict while another thread changed its
   size ("dictionary changed size during iteration"), even a mere GetItem, since moto's
   get_item adds an empty partition for a partition key that does not exist. Now each table has
   its own lock, held by its writes and by the reads that look it up or iterate it (GetItem,
   Query, Scan, DescribeTable, backups, PartiQL); a request that names several tables takes
   their locks in one order (by ARN). A PutItem/UpdateItem/DeleteItem request holds the lock
   from the read for its ReturnValues to the write; TransactGetItems reads one snapshot.
   UpdateItem is copy-on-write: it changes a copy put in the stored Item's place, so an Item
   handed to a reader (serialised after the lock is released) is never changed under it.
3. TransactWriteItems that costs what it touches: moto deep-copied every table a transaction
   names, once per item naming it, to put the copy back if an item failed; each transaction
   cost the size of its tables (a job grew O(n^2), DynamoType.__deepcopy__ on top of the
   profile). Here moto's own loop runs (its checks, its per-item put/update/delete, its
   CancellationReasons in order, TransactionCanceledException), keeping only the items it
   replaces; on any failure those are put back and the items it created deleted. moto has no
   idempotency tokens (ClientRequestToken is ignored), so neither does this.
4. No instance kept of every DynamoDB Item and SQS Message ever made: moto's BaseModel lists
   them all (for /moto-api/data.json) until a reset, so every item copy, every table copy of
   (3) and every received message stayed in memory: RSS grew to GBs.
5. SQS calls that do not walk the queue: moto built a queue's whole attribute map, counting its
   messages (a pass over all of them, reading the clock twice a message, three passes in all),
   to read one attribute: on every send, and three times for every message received. Here the
   counts are computed, in one pass, only when GetQueueAttributes asks for them (so they are as
   right as moto's); a receive stops looking once it has its messages; a delete finds its
   message by its receipt handle instead of asking every message, twice, and replaces the list
   under the lock moto's sends append under, so a message sent meanwhile is not lost.
6. EventBridge to Step Functions: moto delivers S3's object-created events to rules but has no
   ``states`` target. Here such a target starts an execution with the rule's InputTransformer
   applied, exactly the wiring the deployed stack has.
7. The ``states:startExecution`` task (the state machine's HandOver): moto passes the ASL's
   parameter names (StateMachineArn, Input, Name) to boto3 unchanged, and boto3 knows them as
   stateMachineArn, input and name, and names an unnamed execution "None" (every one the same).
   Here they are renamed, and an execution gets a UUID for a name, as Step Functions does.
8. One Object Created event per multipart upload, as S3 sends (moto sent two).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import json
import os
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from batchline_local import crashes

_ENV_LOCK = threading.Lock()
_applied_env: dict[str, str] = {}
_original_env: dict[str, str | None] = {}
_on_env_change: list[Callable[[], None]] = []
_installed = False
moto_transact_write_items: Callable | None = None  # moto's own, kept to compare against in tests


@dataclass
class LocalLambdaContext:
    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    deadline: float | None = None  # time.monotonic() at which Lambda would stop it; None: 15 minutes from now

    def get_remaining_time_in_millis(self) -> int:
        """What is left of the function's timeout, as Lambda counts it: a handler that plans by it
        (the worker's sending deadline, the wait past which it hands requests back) sees here the
        clock it sees in AWS. Nothing is left once the local stack ends the function's invocations
        (`end_invocations`): the handler winds up as it would at its timeout."""
        if self.function_name in _ending_functions:
            return 0
        if self.deadline is None:
            return 900_000
        return max(0, int((self.deadline - time.monotonic()) * 1000))


_ending_functions: set[str] = set()


def end_invocations(function_name: str) -> None:
    """From now on, the function's invocations (those under way included) have no time left."""
    _ending_functions.add(function_name)


def clear_ended_invocations() -> None:
    _ending_functions.clear()


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
        deadline=time.monotonic() + float(fn.timeout or 3),
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


# -- DynamoDB: a lock per table, items copied on write, transactions that copy what they touch ----

_TABLE_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_TABLE_LOCKS_GUARD = threading.Lock()


def _table_lock(table: Any) -> threading.RLock:
    lock = _TABLE_LOCKS.get(table)
    if lock is None:
        with _TABLE_LOCKS_GUARD:
            lock = _TABLE_LOCKS.get(table)
            if lock is None:
                lock = _TABLE_LOCKS[table] = threading.RLock()
    return lock


@contextlib.contextmanager
def _holding(tables: Iterable[Any]) -> Iterator[None]:
    """Hold the locks of `tables`, taken in one fixed order (by ARN), so two callers never deadlock."""
    unique = {id(table): table for table in tables if table is not None}
    ordered = sorted(unique.values(), key=lambda table: (table.table_arn, id(table)))
    with contextlib.ExitStack() as stack:
        for table in ordered:
            stack.enter_context(_table_lock(table))
        yield


def _table_or_none(backend: Any, name: Any) -> Any:
    from moto.dynamodb.exceptions import ResourceNotFoundException

    if not isinstance(name, str):
        return None
    try:
        return backend.get_table(name)
    except ResourceNotFoundException:
        return None


def _locking_table(method: Callable, position: int = 0, parameter: str = "table_name") -> Callable:
    """Run a backend method that reads or writes one table while holding that table's lock."""

    def locked(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        name = args[position] if len(args) > position else kwargs.get(parameter)
        table = _table_or_none(self, name)
        if table is None:  # moto answers with its own not-found error
            return method(self, *args, **kwargs)
        with _table_lock(table):
            return method(self, *args, **kwargs)

    return locked


def _locking_every_table(method: Callable) -> Callable:
    """PartiQL reads every table of the backend (moto hands them all to its parser)."""

    def locked(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        with _holding(list(self.tables.values())):
            return method(self, *args, **kwargs)

    return locked


def _locking_request(handler_method: Callable, table_names: Callable[[dict], list[Any]]) -> Callable:
    """Hold, for a whole request, the locks of the tables it names. A PutItem, UpdateItem or
    DeleteItem request reads the item for its ReturnValues, then writes: one step under the lock,
    so the values returned are those the write replaced. TransactGetItems reads its items one by
    one: under the locks, they are one snapshot, as DynamoDB promises."""

    def locked(self):  # noqa: ANN001
        body = getattr(self, "body", None)
        try:
            names = table_names(body) if isinstance(body, dict) else []
        except Exception:  # a malformed request: moto's own code reports it
            names = []
        with _holding(_table_or_none(self.dynamodb_backend, name) for name in names):
            return handler_method(self)

    return locked


def _request_table(body: dict) -> list[Any]:
    return [body.get("TableName")]


def _transaction_tables(body: dict) -> list[Any]:
    return [op.get("TableName") for item in body.get("TransactItems") or [] for op in item.values()]


_Slot = tuple[Any, Any]  # (hash key, range key or None) of an item in a moto Table


def _slot(table: Any, key: Any) -> _Slot | None:
    """Where `key` (a request's Key) lives in `table`, or None if it is not a full key."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    try:
        if not isinstance(key, dict) or table.hash_key_attr not in key:
            return None
        hash_value = DynamoType(key[table.hash_key_attr])
        if table.range_key_attr is None:
            return hash_value, None
        if table.range_key_attr not in key:
            return None
        return hash_value, DynamoType(key[table.range_key_attr])
    except Exception:  # a malformed key: moto's own code reports it
        return None


def _stored(table: Any, slot: _Slot) -> Any:
    """The item at `slot`, read without adding an empty partition to the table (`table.items` is a
    defaultdict: moto's own get_item adds one for a partition that does not exist)."""
    hash_value, range_value = slot
    if range_value is None:
        return table.items.get(hash_value)
    partition = table.items.get(hash_value)
    return None if partition is None else partition.get(range_value)


def _put_back(table: Any, slot: _Slot, item: Any) -> None:
    """Make `item` (None: no item) the one at `slot` again, with no stream record: an undo."""
    hash_value, range_value = slot
    if item is not None:
        if range_value is None:
            table.items[hash_value] = item
        else:
            table.items[hash_value][range_value] = item
    elif range_value is None:
        table.items.pop(hash_value, None)
    else:
        partition = table.items.get(hash_value)
        if partition is not None:
            partition.pop(range_value, None)
            if not partition:
                table.items.pop(hash_value, None)


def _update_item_copy_on_write(update_item: Callable) -> Callable:
    """moto's update_item changes the stored Item in place. Here it changes a copy put in the stored
    one's place (one item copied, as moto copies it for streams anyway), so an Item a reader was
    handed, or a transaction kept to undo, is never changed under it; a failed update puts the
    original back, as DynamoDB leaves an item a failed update did not change."""

    def update(self, table_name, key, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        table = _table_or_none(self, table_name)
        if table is None:
            return update_item(self, table_name, key, *args, **kwargs)
        with _table_lock(table):
            slot = _slot(table, key)
            before = _stored(table, slot) if slot is not None else None
            if before is not None:
                _put_back(table, slot, copy.deepcopy(before))
            try:
                return update_item(self, table_name, key, *args, **kwargs)
            except BaseException:
                if slot is not None:
                    _put_back(table, slot, before)
                raise

    return update


def _transact_write_items(self, transact_items: list[dict[str, Any]]) -> None:  # noqa: ANN001
    """moto's transact_write_items, undone item by item instead of by a deep copy of every table.

    moto deep-copies each table the transaction names, so that it can put the copy back if an item
    fails: every transaction costs the size of its tables. Here the loop is moto's own (same
    checks, same per-item put/update/delete, same CancellationReasons in the same order), but it
    keeps the item each write replaces (copy-on-write: update_item never changes a stored Item in
    place, so keeping the object is keeping the item) and, on any failure, puts those items back,
    deleting the ones the transaction created. All the tables' locks are held throughout.
    """
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    tables = [_table_or_none(self, next(iter(item.values()), {}).get("TableName")) for item in transact_items]
    with _holding(tables):
        undo: list[tuple[Any, _Slot, Any]] = []  # (table, slot, item before), in the order written
        streams = [
            (table.stream_shard, table.stream_shard.items, len(table.stream_shard.items))
            for table in {id(t): t for t in tables if t is not None}.values()
            if table.stream_shard is not None
        ]

        def roll_back() -> None:
            for table, slot, before in reversed(undo):
                _put_back(table, slot, before)
            for shard, records, count in streams:  # moto's table copy took its stream records back too
                del records[count:]
                shard.items = records

        target_items: set[tuple[str, str]] = set()

        def check_unicity(table_name: str, key: dict[str, Any]) -> None:
            item = (str(table_name), str(dict(sorted(key.items()))))
            if item in target_items:
                raise MultipleTransactionsException()
            target_items.add(item)

        errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []  # [(Code, Message, Item), ..]
        try:
            for item in transact_items:
                original_item: dict[str, Any] | None = None
                # Check transact writes are not performing multiple operations on the same item
                if len(list(item.keys())) > 1:
                    raise TransactWriteSingleOpException
                try:
                    op_type, op = next(iter(item.items()))
                    if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                        raise ValueError("Unsupported transaction operation")

                    table_name = op["TableName"]
                    condition_expression = op.get("ConditionExpression")
                    expression_attribute_names = op.get("ExpressionAttributeNames")
                    expression_attribute_values = op.get("ExpressionAttributeValues")
                    return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")

                    if op_type == "Put":
                        attrs = op["Item"]
                        table = self.get_table(table_name)
                        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                        if table.range_key_attr is not None:
                            key[table.range_key_attr] = attrs[table.range_key_attr]
                    else:
                        key = op["Key"]

                    check_unicity(table_name, key)

                    current = self.get_item(table_name, key)
                    if op_type != "ConditionCheck":  # the one copy kept: the item this write replaces
                        table = self.get_table(table_name)
                        undo.append((table, self.get_keys_value(table, key), current))
                    if condition_expression is not None:
                        condition_op = get_filter_expression(
                            condition_expression,
                            expression_attribute_names,
                            expression_attribute_values,
                        )
                        if not condition_op.expr(current):
                            if return_values_on_condition_check_failure == "ALL_OLD" and current:
                                original_item = current.to_json()["Attributes"]
                            raise ConditionalCheckFailed(item=original_item)

                    if op_type == "Put":
                        self.put_item(
                            table_name,
                            op["Item"],
                            condition_expression=condition_expression,
                            expression_attribute_names=expression_attribute_names,
                            expression_attribute_values=expression_attribute_values,
                        )
                    elif op_type == "Delete":
                        self.delete_item(
                            table_name,
                            key,
                            condition_expression=condition_expression,
                            expression_attribute_names=expression_attribute_names,
                            expression_attribute_values=expression_attribute_values,
                        )
                    elif op_type == "Update":
                        self.update_item(
                            table_name,
                            key,
                            update_expression=op["UpdateExpression"],
                            condition_expression=condition_expression,
                            expression_attribute_names=expression_attribute_names,
                            expression_attribute_values=expression_attribute_values,
                        )
                    errors.append((None, None, None))
                except (MultipleTransactionsException, MockValidationException):
                    raise  # rolled back below, and reraised, as moto does
                except ConditionalCheckFailed as e:
                    errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
                except Exception as e:  # for other exceptions, capture their details, as moto does
                    errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]
        except BaseException:
            roll_back()
            raise
        if any(code is not None for code, _, _ in errors):
            roll_back()
            raise TransactionCanceledException(errors)


def _one_event_per_multipart_upload(put_object: Callable) -> Callable:
    """moto's CompleteMultipartUpload stores the object with put_object, which sends an Object
    Created event, then sends its own: two events, so two executions, for one upload. S3 sends one."""

    def put_without_a_second_event(*args, **kwargs):  # noqa: ANN002, ANN003
        if kwargs.get("multipart") is not None:
            kwargs["disable_notification"] = True
        return put_object(*args, **kwargs)

    return put_without_a_second_event


# -- SQS: the message counts computed when asked for, not on every send and receive ---------------

_COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesNotVisible")
_DEFERRED = object()  # a count that `Queue.attributes` leaves out: nobody asked for it
_sqs_answer = threading.local()  # .counting: None, _STATIC, or {id(queue): counts} for one GetQueueAttributes
_STATIC = object()
_receipts: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()  # receipt handle -> Message


def _count_messages(queue: Any) -> tuple[int, int, int]:
    """moto's three counts in one pass: visible (and not delayed), delayed, not visible."""
    available = delayed = in_flight = 0
    for message in list(queue._messages):
        visible, late = message.visible, message.delayed
        available += visible and not late
        delayed += late
        in_flight += not visible
    return available, delayed, in_flight


def _count(index: int) -> property:
    def count(self) -> Any:  # noqa: ANN001
        counting = getattr(_sqs_answer, "counting", None)
        if counting is _STATIC:
            return _DEFERRED
        if counting is None:  # read directly: counted now
            return _count_messages(self)[index]
        if id(self) not in counting:
            counting[id(self)] = _count_messages(self)
        return counting[id(self)][index]

    return property(count)


def _attributes_without_unasked_counts(attributes: property) -> property:
    """moto builds a queue's whole attribute map, the message counts with it (each a pass over every
    message, with two clock reads a message), wherever it reads one attribute: on every send (for
    ContentBasedDeduplication) and three times for every message received (for the retention
    period). Here the map leaves the counts out unless a GetQueueAttributes asks for them."""

    def read(self) -> dict[str, Any]:  # noqa: ANN001
        if getattr(_sqs_answer, "counting", None) is not None:
            return attributes.fget(self)
        _sqs_answer.counting = _STATIC
        try:
            result = attributes.fget(self)
        finally:
            _sqs_answer.counting = None
        return {name: value for name, value in result.items() if value is not _DEFERRED}

    return property(read)


def _counting_when_asked(get_queue_attributes: Callable) -> Callable:
    def answer(self, queue_name, attribute_names):  # noqa: ANN001
        if not any(name == "All" or name in _COUNTS for name in attribute_names or ()):
            return get_queue_attributes(self, queue_name, attribute_names)
        previous = getattr(_sqs_answer, "counting", None)
        _sqs_answer.counting = {}  # counted once for this answer, however often moto reads them
        try:
            return get_queue_attributes(self, queue_name, attribute_names)
        finally:
            _sqs_answer.counting = previous

    return answer


class _VisibleMessages:
    """moto's ``Queue.messages`` (the messages one can receive), worked out as it is read: a receive
    that stops at its tenth message no longer looks at every message in the queue first."""

    def __init__(self, messages: list[Any]) -> None:
        self._messages = list(messages)

    def __iter__(self) -> Iterator[Any]:
        return (message for message in self._messages if message.visible and not message.delayed)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return any(True for _ in self)

    def __getitem__(self, index: Any) -> Any:
        return list(self)[index]


def _indexing_receipts(mark_received: Callable) -> Callable:
    def mark(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        mark_received(self, *args, **kwargs)
        _receipts[self.receipt_handle] = self

    return mark


def _delete_by_receipt(delete_message: Callable) -> Callable:
    """moto finds the message to delete by asking every message in the queue, twice, whether it ever
    had the receipt handle. Here the handle leads to its message. The queue's message list is
    replaced under its lock, the lock moto's add_message appends under, so a message sent while
    another is deleted is not lost with the old list."""

    def delete(self, receipt_handle):  # noqa: ANN001
        with self._messages_lock:
            message = _receipts.get(receipt_handle)
            if receipt_handle in self.deleted_messages or message is None or message not in self._messages:
                return delete_message(self, receipt_handle)  # moto's own search, or its error
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            remaining = self._messages.copy()
            remaining.remove(message)
            self._messages = remaining

    return delete


def _untracked(model: type) -> None:
    """moto's BaseModel.__new__ appends every instance of a model class to a class-level list (for
    /moto-api/data.json) that only a reset empties: every DynamoDB Item ever made (each put, each
    copy an update, query or scan makes) and every SQS Message copy a receive hands out stays alive
    for the whole run. Those two are made without being kept."""

    def new(cls, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        return object.__new__(cls)

    model.__new__ = staticmethod(new)


def _start_execution_with_api_names(eval_service_task: Callable) -> Callable:
    def renamed(self, env, resource_runtime_part, normalised_parameters, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if self._get_boto_service_action() == "start_execution":
            normalised_parameters = {key[:1].lower() + key[1:]: value for key, value in normalised_parameters.items()}
            normalised_parameters.setdefault("name", str(uuid.uuid4()))  # Step Functions names it so; moto: "None"
        return eval_service_task(self, env, resource_runtime_part, normalised_parameters, *args, **kwargs)

    return renamed


# What other local modules (durable_state) use of these: the same locks, the same slots.
table_lock = _table_lock
holding_tables = _holding
slot_of = _slot
stored_item = _stored


def install() -> None:
    """Apply the patches once per process."""
    global _installed, moto_transact_write_items
    if _installed:
        return
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.responses import DynamoHandler
    from moto.events.models import Rule
    from moto.s3.models import S3Backend
    from moto.sqs import models as sqs_models
    from moto.sqs.models import Message, Queue, SQSBackend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    LambdaSimpleBackend.invoke = _invoke_in_process
    S3Backend.put_object = _one_event_per_multipart_upload(S3Backend.put_object)
    Rule.send_to_targets = _send_to_targets_with_states(Rule.send_to_targets)
    StateTaskServiceSfn._eval_service_task = _start_execution_with_api_names(StateTaskServiceSfn._eval_service_task)
    for name in ("put_item", "delete_item", "get_item", "query", "scan", "create_backup"):
        setattr(DynamoDBBackend, name, _locking_table(getattr(DynamoDBBackend, name)))
    DynamoDBBackend.describe_table = _locking_table(DynamoDBBackend.describe_table, parameter="name")
    DynamoDBBackend.restore_table_to_point_in_time = _locking_table(
        DynamoDBBackend.restore_table_to_point_in_time, position=1, parameter="source_table_name"
    )
    DynamoDBBackend.execute_statement = _locking_every_table(DynamoDBBackend.execute_statement)
    DynamoDBBackend.update_item = _update_item_copy_on_write(DynamoDBBackend.update_item)
    moto_transact_write_items = DynamoDBBackend.transact_write_items
    DynamoDBBackend.transact_write_items = _transact_write_items
    _untracked(Item)
    for name in ("put_item", "update_item", "delete_item"):
        setattr(DynamoHandler, name, _locking_request(getattr(DynamoHandler, name), _request_table))
    DynamoHandler.transact_get_items = _locking_request(DynamoHandler.transact_get_items, _transaction_tables)
    Queue.attributes = _attributes_without_unasked_counts(Queue.attributes)
    # The map turns each attribute's name into a Python name, character by character, every time.
    sqs_models.camelcase_to_underscores = functools.lru_cache(maxsize=None)(sqs_models.camelcase_to_underscores)
    Queue.approximate_number_of_messages = _count(0)
    Queue.approximate_number_of_messages_delayed = _count(1)
    Queue.approximate_number_of_messages_not_visible = _count(2)
    Queue.messages = property(lambda queue: _VisibleMessages(queue._messages))
    Queue.delete_message = _delete_by_receipt(Queue.delete_message)
    Message.mark_received = _indexing_receipts(Message.mark_received)
    _untracked(Message)
    SQSBackend.get_queue_attributes = _counting_when_asked(SQSBackend.get_queue_attributes)
    _installed = True

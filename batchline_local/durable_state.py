"""The local stack's table and output bucket kept on disk, so that a run survives its process.

moto keeps every item and object in memory: a local run that is killed (kill -9, a closed
terminal, a crash) used to lose its whole state, and the same command again planned the job anew
and sent every request again, paying twice for what had been answered. With a state directory,
every write to the job table and every object put in the output bucket is also written to disk,
in the same step (under the table's lock, before the caller is answered), and the next local
stack on that directory starts from it. The job's records, its shards and batch ids, the lines
answered, the answers themselves, the budget's counters: all that the deployed stack keeps in
DynamoDB and S3 is what a rerun finds, so it resumes exactly as a deployed job resumes when its
file is uploaded again.

Layout of the directory:

- ``table.jsonl``: one line per write, ``{"table", "key", "item"}`` in DynamoDB's JSON (``item``
  null for a delete); on start, the last line of each key wins and the file is rewritten with
  those alone, so it never grows past one line per live item plus one run's writes;
- ``s3/<bucket>/<key>``: each object's bytes, replaced atomically (written aside, then renamed).

What is not kept is what a rerun must not find: queued SQS messages (Plan's resume queues the
unanswered lines again), Step Functions executions (the upload starts a new one), and the input
bucket (the rerun uploads the file again).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from batchline_local import moto_patches

TABLE_JOURNAL = "table.jsonl"
OBJECTS_DIR = "s3"

_active: DurableState | None = None
_installed = False


class DurableState:
    """Writes through to `directory` what moto holds for `table` and `buckets`; see the module docstring."""

    def __init__(self, directory: Path, *, table: str, buckets: Iterable[str]) -> None:
        self.directory = Path(directory)
        self.table = table
        self.buckets = frozenset(buckets)
        self._journal_lock = threading.Lock()
        self._objects_lock = threading.Lock()
        self._journal: Any = None

    # -- start and stop ------------------------------------------------------------------------
    def restore_and_attach(self, account_id: str, region: str) -> dict[str, int]:
        """Load what the directory holds into moto's backends, then write every change through.

        Returns how many items and objects were restored.
        """
        from moto.dynamodb.models import dynamodb_backends
        from moto.s3.models import s3_backends

        self.directory.mkdir(parents=True, exist_ok=True)
        items = self._last_items()
        table = dynamodb_backends[account_id][region].get_table(self.table)
        for _, item in items.values():
            table.put_item(item)
        s3 = s3_backends[account_id]["aws"]
        objects = 0
        for bucket, key, path in self._stored_objects():
            s3.put_object(bucket, key, path.read_bytes(), disable_notification=True)
            objects += 1
        self._rewrite_journal(items.values())
        self._journal = open(self.directory / TABLE_JOURNAL, "ab")  # noqa: SIM115 - open while attached
        _attach(self)
        return {"items": len(items), "objects": objects}

    def detach(self) -> None:
        _detach(self)
        with self._journal_lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    # -- the table -----------------------------------------------------------------------------
    def _last_items(self) -> dict[bytes, tuple[list, dict]]:
        """(key, item) of every item the journal leaves alive, by key."""
        path = self.directory / TABLE_JOURNAL
        items: dict[bytes, tuple[list, dict]] = {}
        if not path.is_file():
            return items
        with open(path, "rb") as journal:
            for raw in journal:
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:  # the last line of a process killed mid-write
                    continue
                if entry.get("table") != self.table:
                    continue
                slot = orjson.dumps(entry["key"], option=orjson.OPT_SORT_KEYS)
                if entry["item"] is None:
                    items.pop(slot, None)
                else:
                    items[slot] = (entry["key"], entry["item"])
        return items

    def _rewrite_journal(self, items: Iterable[tuple[list, dict]]) -> None:
        path = self.directory / TABLE_JOURNAL
        aside = path.with_suffix(".rewrite")
        with open(aside, "wb") as journal:
            for key, item in items:
                journal.write(orjson.dumps({"table": self.table, "key": key, "item": item}) + b"\n")
        os.replace(aside, path)

    def wrote(self, table: Any, slots: Iterable[Any]) -> None:
        """Journal the items now at `slots` of moto's `table` (called under the table's lock)."""
        if table.name != self.table:
            return
        lines = []
        for slot in slots:
            stored = moto_patches.stored_item(table, slot)
            item = None if stored is None else stored.to_json()["Attributes"]
            lines.append(orjson.dumps({"table": self.table, "key": _key_json(slot), "item": item}) + b"\n")
        with self._journal_lock:
            if self._journal is not None:
                self._journal.write(b"".join(lines))
                self._journal.flush()  # in the OS's hands: a killed process loses nothing

    # -- the output bucket ---------------------------------------------------------------------
    def _object_path(self, bucket: str, key: str) -> Path:
        parts = [part for part in key.split("/") if part not in ("", ".", "..")]
        return self.directory / OBJECTS_DIR / bucket / Path(*parts)

    def _stored_objects(self) -> Iterator[tuple[str, str, Path]]:
        root = self.directory / OBJECTS_DIR
        if not root.is_dir():
            return
        for bucket_dir in sorted(root.iterdir()):
            if bucket_dir.name not in self.buckets:
                continue
            for path in sorted(bucket_dir.rglob("*")):
                if path.is_file() and not path.name.endswith(".writing"):
                    yield bucket_dir.name, path.relative_to(bucket_dir).as_posix(), path

    def put(self, bucket: str, key: str, value: bytes) -> None:
        if bucket not in self.buckets:
            return
        path = self._object_path(bucket, key)
        with self._objects_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            aside = path.with_name(path.name + ".writing")
            aside.write_bytes(value)
            os.replace(aside, path)

    def delete(self, bucket: str, key: str) -> None:
        if bucket in self.buckets:
            with self._objects_lock:
                self._object_path(bucket, key).unlink(missing_ok=True)


def _key_json(slot: Any) -> list:
    hash_value, range_value = slot
    return [hash_value.to_json(), None if range_value is None else range_value.to_json()]


def _attach(state: DurableState) -> None:
    global _active
    _install()
    if _active is not None and _active is not state:
        raise RuntimeError(f"a local stack already keeps its state in {_active.directory}")
    _active = state


def _detach(state: DurableState) -> None:
    global _active
    if _active is state:
        _active = None


# -- the hooks in moto ---------------------------------------------------------------------------
def _writing_one_item(method: Callable, key_of: Callable[[tuple, dict], Any]) -> Callable:
    def write(self, table_name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        state = _active
        if state is None or table_name != state.table:
            return method(self, table_name, *args, **kwargs)
        table = self.get_table(table_name)
        with moto_patches.table_lock(table):
            result = method(self, table_name, *args, **kwargs)
            slot = moto_patches.slot_of(table, key_of(args, kwargs))
            if slot is not None:
                state.wrote(table, [slot])
            return result

    return write


def _writing_transactions(method: Callable) -> Callable:
    def write(self, transact_items):  # noqa: ANN001
        state = _active
        if state is None:
            return method(self, transact_items)
        touched = []
        for entry in transact_items:
            for kind, operation in entry.items():
                if kind == "ConditionCheck" or operation.get("TableName") != state.table:
                    continue
                touched.append(operation.get("Key") or operation.get("Item"))
        if not touched:
            return method(self, transact_items)
        table = self.get_table(state.table)
        with moto_patches.holding_tables([table]):
            result = method(self, transact_items)
            slots = [slot for key in touched if (slot := moto_patches.slot_of(table, key)) is not None]
            state.wrote(table, slots)
            return result

    return write


def _putting_objects(method: Callable) -> Callable:
    def put(self, bucket_name, key_name, value, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        result = method(self, bucket_name, key_name, value, *args, **kwargs)
        state = _active
        if state is not None:
            state.put(bucket_name, key_name, bytes(value))
        return result

    return put


def _deleting_objects(method: Callable) -> Callable:
    def delete(self, bucket_name, key_name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        result = method(self, bucket_name, key_name, *args, **kwargs)
        state = _active
        if state is not None:
            state.delete(bucket_name, key_name)
        return result

    return delete


def _install() -> None:
    """Wrap moto's writes once per process (after moto_patches, whose locks they take)."""
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.s3.models import S3Backend

    moto_patches.install()
    DynamoDBBackend.put_item = _writing_one_item(
        DynamoDBBackend.put_item, lambda args, kwargs: kwargs.get("item_attrs", args[0] if args else None)
    )
    for name in ("update_item", "delete_item"):
        setattr(
            DynamoDBBackend,
            name,
            _writing_one_item(getattr(DynamoDBBackend, name), lambda args, kwargs: kwargs.get("key", args[0])),
        )
    DynamoDBBackend.transact_write_items = _writing_transactions(DynamoDBBackend.transact_write_items)
    S3Backend.put_object = _putting_objects(S3Backend.put_object)
    S3Backend.delete_object = _deleting_objects(S3Backend.delete_object)
    _installed = True

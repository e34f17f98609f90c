"""The results of a table job as a table: one row per input row, in input order, joined to its columns.

Finalize streams the input table (the same reader Plan used) beside the job's outcomes, which it
has already merged into row order, and writes record batches as it goes, so a table of any length
is written in bounded memory. Each output row carries the input columns the job keeps (all of them
by default), then what became of its request:

- ``custom_id``: the request's id (the user's `--id-column`, or the one derived from the row);
- ``text`` (a chat's answer) or ``embedding`` (an embedding's vector);
- ``parsed``: the answer validated against the job's schema, as JSON; with `flatten`, one column per
  top-level property of the schema instead, typed from the schema;
- ``status`` (succeeded, failed, invalid), ``error_code`` and ``error`` (why it has no answer);
- ``input_tokens``, ``output_tokens``, ``cost_usd`` and ``route`` (batch, realtime or cache).

The input's columns keep their names; one of these whose name an input column has already (a
``text`` or ``status`` column of the user's) is written as ``answer_<name>`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from batchline.datasets.readers import MISSING, RowBatch
from batchline.datasets.spec import TableSpec
from batchline.domain.outcomes import usage_tokens

# (row, outcome record, succeeded): what Finalize merged for each row, in row order.
Outcome = tuple[int, dict[str, Any], bool]

_JSON_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


def _schema_type(node: dict[str, Any]) -> pa.DataType | None:
    """The arrow type of a JSON Schema node when it is one scalar type (a nullable one too); else None."""
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if node.get("enum") is not None and kind is None:
        kind = "string"
    return _JSON_TYPES.get(kind) if isinstance(kind, str) else None


class OutputColumns:
    """The output table's own columns (after the input's), their types, and one row's values."""

    def __init__(self, spec: TableSpec) -> None:
        self.embedding = spec.embed is not None
        properties = (spec.schema or {}).get("properties") or {}
        self.flattened = {name: _schema_type(node) for name, node in properties.items()} if spec.flatten else {}
        fields: list[pa.Field] = [pa.field("custom_id", pa.string())]
        fields.append(
            pa.field("embedding", pa.list_(pa.float32())) if self.embedding else pa.field("text", pa.string())
        )
        if spec.flatten:
            fields += [pa.field(name, kind or pa.string()) for name, kind in self.flattened.items()]
        elif spec.schema is not None:
            fields.append(pa.field("parsed", pa.string()))
        fields += [
            pa.field("status", pa.string()),
            pa.field("error_code", pa.string()),
            pa.field("error", pa.string()),
            pa.field("input_tokens", pa.int64()),
            pa.field("output_tokens", pa.int64()),
            pa.field("cost_usd", pa.float64()),
            pa.field("route", pa.string()),
        ]
        self.fields = fields

    def values(self, record: dict[str, Any] | None, succeeded: bool, cost_usd: float | None) -> dict[str, Any]:
        """One row's output values; `record` None: the row has no outcome (never expected, reported as such)."""
        row: dict[str, Any] = {field.name: None for field in self.fields}
        if record is None:
            row.update(status="failed", error_code="no_outcome", error="this row has no outcome")
            return row
        row["custom_id"] = record.get("custom_id")
        if succeeded:
            body = (record.get("response") or {}).get("body") or record.get("response") or {}
            row["status"] = "succeeded"
            row["route"] = record.get("route")
            row["input_tokens"], row["output_tokens"] = usage_tokens(record.get("usage") or body.get("usage"))
            row["cost_usd"] = cost_usd
            if self.embedding:
                data = body.get("data") or [{}]
                row["embedding"] = data[0].get("embedding")
            else:
                row["text"] = _answer_text(body)
            parsed = record.get("parsed")
            if self.flattened:
                for name, kind in self.flattened.items():
                    value = parsed.get(name) if isinstance(parsed, dict) else None
                    row[name] = value if kind is not None or value is None else orjson.dumps(value).decode()
            elif "parsed" in row and parsed is not None:
                row["parsed"] = orjson.dumps(parsed).decode()
        else:
            row["status"] = "invalid" if record.get("stage") == "validation" else "failed"
            row["error_code"] = record.get("code")
            row["error"] = record.get("message")
            row["route"] = record.get("route")
        return row


def _answer_text(body: dict[str, Any]) -> str | None:
    """A chat completion's (or a Responses call's) answer text."""
    choices = body.get("choices")
    if choices:
        return (choices[0].get("message") or {}).get("content")
    for item in body.get("output") or ():  # the Responses API
        for part in item.get("content") or ():
            if part.get("type") == "output_text":
                return part.get("text")
    return None


def _input_schema(first: RowBatch, carried: list[str], known: pa.Schema | None) -> list[pa.Field]:
    """The carried input columns' types: the input's own (parquet) where known, else strings."""
    fields = []
    for name in carried:
        kind = known.field(name).type if known is not None and name in known.names else pa.string()
        fields.append(pa.field(name, kind))
    return fields


def _as_text(value: Any) -> str | None:
    if value is None or value is MISSING or isinstance(value, str):
        return None if value is MISSING else value
    return orjson.dumps(value, default=str).decode()


def write_output_table(
    batches: Iterable[RowBatch],
    outcomes: Iterable[Outcome],
    spec: TableSpec,
    destination: Path,
    *,
    cost_of: Callable[[dict[str, Any]], float | None],
    input_schema: pa.Schema | None = None,
) -> int:
    """Write the output table to `destination` (parquet or CSV, as the spec says); the rows written.

    `batches` are the input's row batches in order, `outcomes` one per row in the same order (a
    row missing from them is written as failed with error_code no_outcome). `input_schema` types
    the carried columns (a parquet input's schema); strings otherwise.
    """
    own = OutputColumns(spec)
    own_names: dict[str, str] = {}  # an output column's name in the table (answer_<name> on a clash)
    outcome_iter: Iterator[Outcome] = iter(outcomes)
    pending = next(outcome_iter, None)
    writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
    schema: pa.Schema | None = None
    carried: list[str] = []
    written = 0
    try:
        for batch in batches:
            if schema is None:
                names = list(batch.columns)
                carried = [name for name in (spec.columns or names) if name in batch.columns]
                own_names = {field.name: _free_name(field.name, set(carried)) for field in own.fields}
                fields = _input_schema(batch, carried, input_schema)
                fields += [pa.field(own_names[field.name], field.type) for field in own.fields]
                schema = pa.schema(fields)
                if spec.output_format == "csv":
                    writer = pa_csv.CSVWriter(str(destination), _csv_schema(schema))
                else:
                    writer = pq.ParquetWriter(str(destination), schema, compression="zstd")
            size = len(next(iter(batch.columns.values()))) if batch.columns else 0
            rows: dict[str, list[Any]] = {field.name: [] for field in schema}
            for offset in range(size):
                row_number = batch.first_row + offset
                while pending is not None and pending[0] < row_number:
                    pending = next(outcome_iter, None)  # an outcome of no row (never expected): skipped
                if pending is not None and pending[0] == row_number:
                    _, record, succeeded = pending
                    values = own.values(record, succeeded, cost_of(record) if succeeded else None)
                    pending = next(outcome_iter, None)
                else:
                    values = own.values(None, False, None)
                for name in carried:
                    cell = batch.columns[name][offset]
                    rows[name].append(
                        (None if cell is MISSING else cell) if input_schema is not None else _as_text(cell)
                    )
                for field in own.fields:
                    rows[own_names[field.name]].append(values[field.name])
            table = pa.Table.from_pydict(rows, schema=schema)
            assert writer is not None
            if isinstance(writer, pa_csv.CSVWriter):
                writer.write_table(_for_csv(table))
            else:
                writer.write_table(table)
            written += size
        if writer is None:  # an input with no rows: an empty table with the output's own columns
            schema = pa.schema(own.fields)
            empty = pa.Table.from_pydict({field.name: [] for field in schema}, schema=schema)
            if spec.output_format == "csv":
                pa_csv.write_csv(_for_csv(empty), str(destination))
            else:
                pq.write_table(empty, str(destination))
    finally:
        if writer is not None:
            writer.close()
    return written


def _free_name(name: str, taken: set[str]) -> str:
    candidate = name
    while candidate in taken:
        candidate = f"answer_{candidate}"
    return candidate


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    """CSV holds no lists: an embedding is written as its JSON array."""
    return pa.schema([pa.field(field.name, pa.string()) if pa.types.is_list(field.type) else field for field in schema])


def _for_csv(table: pa.Table) -> pa.Table:
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_list(field.type):
            column = pa.array([None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()])
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=_csv_schema(table.schema))

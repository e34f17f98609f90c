"""Tables read a batch of rows at a time, never the whole file: a 10-million-row file plans in flat memory.

Every reader yields `RowBatch`es of up to `batch_rows` rows, numbered from 1 in input order (data
rows: a CSV header is not a row). A row that cannot be read is still a row: its cells are
`MISSING` and the batch's `errors` says why, so row numbers never shift and nothing else is lost.

- CSV / TSV (pyarrow's streaming reader): every column read as text, quoting and embedded newlines
  as RFC 4180 has them, a UTF-8 BOM skipped, an empty cell is None (only an empty cell: "NA",
  "null", ... stay text). TSV is the same with tabs, quoting included (what pandas writes). A row
  with too few or too many cells is a row error naming the file and the row, and reading goes on.
  What pyarrow cannot resynchronise after (bytes that are not UTF-8, a parse error) stops the file
  with a `TableReadError` naming the file and pyarrow's row, or the last row read. A quote never
  closed is not an error: its cell runs to the end of the file (or to the next quote), as in every
  RFC 4180 reader; the rows it swallowed are gone from the count, which shows in the output table.
- Parquet: record batches in the file's own types (numbers stay numbers).
- JSONL of records: one JSON object a line; blank lines are skipped and not counted; a line that
  is not an object is a row error. A key a record lacks is `MISSING` in that row (a template using
  it fails for that row alone); a key that is null is None.
- A folder of text files: one row per file, in sorted order of the path relative to the folder
  (hidden files and folders skipped): columns `path` and `text`; a file that is not UTF-8 is a row
  error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from batchline.datasets.errors import RowError, TableReadError

__all__ = ["MISSING", "RowBatch", "column_names", "read_batches"]

CSV_BLOCK_BYTES = 1 << 20
_SCHEMA_SAMPLE_ROWS = 8192  # JSONL records whose keys make the column list
TEXT_COLUMNS = ("path", "text")


class _Missing:
    """The cell of a row that has no such column (a JSONL record without the key, an unreadable row)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Rows `first_row` .. `first_row + rows - 1`, column by column; `errors` the rows that could not be read."""

    first_row: int
    columns: dict[str, list[Any]]
    errors: tuple[RowError, ...] = field(default=())

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def read_batches(path: Path, fmt: str, *, batch_rows: int = 8192) -> Iterator[RowBatch]:
    """The rows of `path` in input order, `batch_rows` at a time (CSV batches follow pyarrow's blocks)."""
    if fmt in ("csv", "tsv"):
        return _csv_batches(path, fmt)
    if fmt == "parquet":
        return _parquet_batches(path, batch_rows)
    if fmt == "jsonl":
        return _jsonl_batches(path, batch_rows)
    if fmt == "text":
        return _text_batches(path, batch_rows)
    raise ValueError(f"unknown input format {fmt!r}")


def column_names(path: Path, fmt: str) -> list[str]:
    """The columns a template may use, in the file's order."""
    if fmt in ("csv", "tsv"):
        return _csv_header(path, fmt)
    if fmt == "parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowException, OSError) as error:
            raise TableReadError(f"{path}: not a readable parquet file ({error})") from None
    if fmt == "jsonl":
        return _jsonl_columns(path)
    if fmt == "text":
        return list(TEXT_COLUMNS)
    raise ValueError(f"unknown input format {fmt!r}")


# ---------------------------------------------------------------- CSV and TSV


def _parse_options(fmt: str, handler: Any = None) -> pa_csv.ParseOptions:
    return pa_csv.ParseOptions(
        delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True, invalid_row_handler=handler
    )


def _csv_header(path: Path, fmt: str) -> list[str]:
    try:
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=64 << 10, use_threads=False),
            parse_options=_parse_options(fmt, lambda _row: "skip"),
        )
    except pa.ArrowInvalid as error:
        if "Empty CSV file" in str(error):  # pyarrow's only signal for it
            raise TableReadError(f"{path}: the file is empty (a CSV needs a header row)") from None
        raise TableReadError(f"{path}: the header cannot be read as {fmt.upper()} ({error})") from None
    names = list(reader.schema.names)
    reader.close()
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TableReadError(f"{path}: the header names {', '.join(map(repr, repeated))} more than once")
    return names


class _RaggedRows:
    """pyarrow's invalid-row handler: note the row and skip it; the batches put it back as an error row."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.errors: dict[int, RowError] = {}

    def __call__(self, row: Any) -> str:
        if row.number is None:  # only when pyarrow parses on threads, which _csv_batches turns off
            return "error"
        number = row.number - 1  # pyarrow counts the header as record 1
        self.errors[number] = RowError(
            number,
            None,
            f"{self._path.name}: {row.actual_columns} cells where the header has {row.expected_columns} "
            f"(row skipped): {_clip(row.text)}",
        )
        return "skip"


def _clip(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _csv_batches(path: Path, fmt: str) -> Iterator[RowBatch]:
    names = _csv_header(path, fmt)
    ragged = _RaggedRows(path)
    try:
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            parse_options=_parse_options(fmt, ragged),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as error:
        raise TableReadError(f"{path}: cannot be read as {fmt.upper()} ({error})") from None
    next_row = 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as error:
            raise TableReadError(
                f"{path}: unreadable after row {next_row - 1} (a quote never closed, or bytes that are not "
                f"UTF-8?): {error}"
            ) from None
        columns = {name: batch.column(index).to_pylist() for index, name in enumerate(names)}
        row_batch = _with_skipped(next_row, columns, batch.num_rows, ragged.errors)
        next_row += row_batch.rows
        yield row_batch
    rows = sorted(ragged.errors)  # skipped rows after the last good one
    if rows:
        yield RowBatch(next_row, {name: [MISSING] * len(rows) for name in names}, tuple(ragged.errors.values()))


def _with_skipped(first_row: int, columns: dict[str, list[Any]], good: int, skipped: dict[int, RowError]) -> RowBatch:
    """The batch with the rows pyarrow skipped put back in their places (as MISSING cells and an error).

    A skipped row is noted while pyarrow parses its block, so before the batch of the rows after it.
    """
    if not skipped:
        return RowBatch(first_row, columns)
    errors: list[RowError] = []
    positions: list[int] = []  # where each skipped row goes, in the batch as it grows
    row, placed = first_row, 0
    while placed < good or row in skipped:
        if row in skipped:
            errors.append(skipped.pop(row))
            positions.append(row - first_row)
        else:
            placed += 1
        row += 1
    for values in columns.values():
        for position in positions:
            values.insert(position, MISSING)
    return RowBatch(first_row, columns, tuple(errors))


# ---------------------------------------------------------------- parquet


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise TableReadError(f"{path}: not a readable parquet file ({error})") from None
    names = list(file.schema_arrow.names)
    next_row = 1
    for batch in file.iter_batches(batch_size=batch_rows):
        columns = {name: batch.column(index).to_pylist() for index, name in enumerate(names)}
        yield RowBatch(next_row, columns)
        next_row += batch.num_rows


# ---------------------------------------------------------------- JSONL of records

_decode = msgspec.json.Decoder().decode


def _records(path: Path) -> Iterator[tuple[int, int, Any]]:
    """(row, physical line, decoded value or the DecodeError) of each non-blank line."""
    row = 0
    with open(path, "rb") as file:
        for line_number, line in enumerate(file, 1):
            if not line.strip():
                continue
            row += 1
            try:
                yield row, line_number, _decode(line)
            except msgspec.DecodeError as error:
                yield row, line_number, error


def _jsonl_columns(path: Path) -> list[str]:
    names: dict[str, None] = {}
    for row, _line, value in _records(path):
        if isinstance(value, dict):
            names.update(dict.fromkeys(value))
        if row >= _SCHEMA_SAMPLE_ROWS:
            break
    return list(names)


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    names = _jsonl_columns(path)
    pending: list[tuple[int, int, Any]] = []
    for record in _records(path):
        pending.append(record)
        if len(pending) == batch_rows:
            yield _record_batch(path, names, pending)
            pending = []
    if pending:
        yield _record_batch(path, names, pending)


def _record_batch(path: Path, names: list[str], records: list[tuple[int, int, Any]]) -> RowBatch:
    keys = dict.fromkeys(names)
    for _row, _line, value in records:
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))  # a key the sample did not see is still a column of its rows
    columns: dict[str, list[Any]] = {key: [] for key in keys}
    errors: list[RowError] = []
    for row, line, value in records:
        if not isinstance(value, dict):
            what = f"not JSON ({value})" if isinstance(value, msgspec.DecodeError) else f"a JSON {_kind(value)}"
            errors.append(RowError(row, None, f"{path.name} line {line} is {what}, not an object of columns"))
            value = {}
        for key, values in columns.items():
            values.append(value.get(key, MISSING))
    return RowBatch(records[0][0], columns, tuple(errors))


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


# ---------------------------------------------------------------- a folder of text files


def _text_files(folder: Path) -> list[str]:
    relative = (file.relative_to(folder).as_posix() for file in folder.rglob("*") if file.is_file())
    return sorted(name for name in relative if not any(part.startswith(".") for part in name.split("/")))


def _text_batches(folder: Path, batch_rows: int) -> Iterator[RowBatch]:
    if not folder.is_dir():
        raise TableReadError(f"{folder}: not a folder (the text format reads a folder of text files)")
    files = _text_files(folder)  # names only: one short string per file
    for first in range(0, len(files), batch_rows):
        names = files[first : first + batch_rows]
        texts: list[Any] = []
        errors: list[RowError] = []
        for offset, name in enumerate(names):
            row = first + offset + 1
            try:
                texts.append((folder / name).read_bytes().decode("utf-8"))
            except UnicodeDecodeError as error:
                texts.append(MISSING)
                errors.append(RowError(row, "text", f"{name} is not UTF-8 text (byte {error.start} is {_byte(error)})"))
            except OSError as error:
                texts.append(MISSING)
                errors.append(RowError(row, "text", f"{name} cannot be read ({error.strerror})"))
        yield RowBatch(first + 1, {"path": list(names), "text": texts}, tuple(errors))


def _byte(error: UnicodeDecodeError) -> str:
    return f"0x{error.object[error.start]:02x}"

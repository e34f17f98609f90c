"""One request line per table row: the spec's templates over the row's columns.

What a template sees: every column as a variable (`{{ review }}`), and `row`, the mapping of all of
them, for names that are not identifiers (`{{ row["review text"] }}`; a column called `row` hides
it). Jinja2 with `StrictUndefined` and no autoescaping: a name that is not a column fails the row, a
value is written as it is. An empty cell (None) is written as the empty string; it is still None in
a test (`{% if note %}`, `{{ note is none }}`). A cell a row lacks (a JSONL record without the key)
is undefined: `{% if note is defined %}` tests it, and using it fails that row alone.

A template made only of `{{ column }}` substitutions and text (the common case) is rendered without
Jinja2, from the batch's column lists: the same output, many times faster. Anything else goes through
Jinja2, compiled once per renderer.

A row that gives no request is a `RowError` naming the row and, when known, the column. Every other
row still renders. The lines are the project's request JSONL, serialized by orjson and made
canonical (`canonical_line`: no raw U+2028/U+2029/U+0085), so the planner reads them as it reads a
file a user wrote.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import jinja2.nodes
import msgspec
import orjson

from batchline.datasets.errors import RowError
from batchline.datasets.readers import MISSING, RowBatch, column_names, read_batches
from batchline.datasets.spec import TableSpec, detect_format
from batchline.domain.shard_lines import canonical_line

__all__ = ["REALTIME_VALUES", "RequestRenderer", "RowError", "request_hash", "route_value", "table_lines"]

Route = Literal["realtime", "batch"]
# Cells of --route-column that send a row realtime (compared stripped and lower-cased; True and non-zero
# numbers too). Anything else, an empty cell included, is the batch route.
REALTIME_VALUES = frozenset({"realtime", "true", "yes", "y", "1", "urgent"})
_SHOWN_COLUMNS = 12

_dumps = orjson.dumps
_hash_decode = msgspec.json.Decoder().decode
_hash_encode = msgspec.json.Encoder(order="sorted").encode


def _finalize(value: Any) -> Any:
    return "" if value is None else value


_ENVIRONMENT = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,  # the template is the message as written, its last newline included
    finalize=_finalize,
)


def route_value(cell: Any) -> Route:
    """The route a --route-column cell asks for: "realtime" for REALTIME_VALUES, True or a non-zero number."""
    if cell is True or (type(cell) in (int, float) and cell != 0):
        return "realtime"
    if isinstance(cell, str) and cell.strip().lower() in REALTIME_VALUES:
        return "realtime"
    return "batch"


def _shown(columns: list[str]) -> str:
    shown = ", ".join(columns[:_SHOWN_COLUMNS])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > _SHOWN_COLUMNS else "") if columns else "none"


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


def _plain(text: str) -> bool:
    """No character canonical_line rewrites (a raw CR is escaped by orjson in a JSON string)."""
    return "\x85" not in text and "\u2028" not in text and "\u2029" not in text


class _Template:
    """One of the spec's templates (--prompt or --system), compiled once, rendering a whole batch."""

    def __init__(self, option: str, source: str, columns: list[str]) -> None:
        self.option = option
        self._columns = columns
        ast = _ENVIRONMENT.parse(source)
        self.variables = sorted(jinja2.meta.find_undeclared_variables(ast))
        self.uses_row = "row" in self.variables and "row" not in columns
        self._pieces = _substitutions(ast, set(columns))
        # The columns it reads, by name or as row["name"]: the one to blame when a single one fails.
        by_key = [
            item.arg.value
            for item in ast.find_all(jinja2.nodes.Getitem)
            if isinstance(item.node, jinja2.nodes.Name)
            and item.node.name == "row"
            and isinstance(item.arg, jinja2.nodes.Const)
            and isinstance(item.arg.value, str)
        ]
        names = [name for name in self.variables if name != "row" or not self.uses_row]
        self.used_columns = list(dict.fromkeys([*names, *by_key])) if self.uses_row else names
        self.constant: str | None = None
        self._template = _ENVIRONMENT.from_string(ast)
        if not self.variables:
            self.constant = self._template.render()

    def names_not_in(self, columns: list[str]) -> list[str]:
        return [name for name in self.variables if name not in columns and not (name == "row" and self.uses_row)]

    def render_batch(self, batch: RowBatch) -> list[str | RowError]:
        rows = batch.rows
        if self.constant is not None:
            return [self.constant] * rows
        if self._pieces is not None:
            return self._substitute(batch)
        names = list(batch.columns)
        lists = list(batch.columns.values())
        first = batch.first_row
        return [
            self.render(first + i, dict(zip(names, [cells[i] for cells in lists], strict=True))) for i in range(rows)
        ]

    def render(self, row: int, values: dict[str, Any]) -> str | RowError:
        present = {name: value for name, value in values.items() if value is not MISSING}
        context = {"row": present, **present} if self.uses_row else present
        try:
            text = self._template.render(context)
        except jinja2.UndefinedError as error:
            return self._undefined(row, present, error)
        except Exception as error:  # a filter or a method call failing on this row's values
            return RowError(
                row, self._sole_column(), f"the {self.option} template failed: {type(error).__name__}: {error}"
            )
        return self._blank(row, present) if _is_blank(text) else text

    def _substitute(self, batch: RowBatch) -> list[str | RowError]:
        pieces = self._pieces
        assert pieces is not None
        first, rows = batch.first_row, batch.rows
        lists: list[list[Any]] = []
        for _literal, name in pieces:
            if name is not None:
                cells = batch.columns.get(name)
                if cells is None:  # a column of the file these rows do not have
                    return [self._missing(first + i, name) for i in range(rows)]
                lists.append(cells)
        if len(pieces) == 1 and pieces[0][0] == "":  # "{{ column }}": the cells are the texts
            (name,) = (piece[1] for piece in pieces)
            assert name is not None
            return [
                cell if type(cell) is str and cell and not cell.isspace() else self._cell_problem(first + i, name, cell)
                for i, cell in enumerate(lists[0])
            ]
        out: list[str | RowError] = []
        for i in range(rows):
            parts: list[str] = []
            problem: RowError | None = None
            index = 0
            for literal, name in pieces:
                parts.append(literal)
                if name is not None:
                    cell = lists[index][i]
                    index += 1
                    if cell is MISSING:
                        problem = self._missing(first + i, name)
                        break
                    parts.append("" if cell is None else str(cell))
            if problem is None:
                text = "".join(parts)
                out.append(self._blank(first + i, {}) if _is_blank(text) else text)
            else:
                out.append(problem)
        return out

    def _cell_problem(self, row: int, name: str, cell: Any) -> str | RowError:
        if cell is MISSING:
            return self._missing(row, name)
        text = "" if cell is None else str(cell)
        return (
            RowError(row, name, f"the {self.option} template gave only white space: `{name}` is empty in this row")
            if _is_blank(text)
            else text
        )

    def _missing(self, row: int, name: str) -> RowError:
        return RowError(row, name, f"the {self.option} template uses `{{{{ {name} }}}}`, which this row does not have")

    def _not_a_column(self, row: int, name: str) -> RowError:
        return RowError(
            row,
            name,
            f"the {self.option} template uses `{{{{ {name} }}}}`, which is not a column "
            f"(columns: {_shown(self._columns)})",
        )

    def _undefined(self, row: int, present: dict[str, Any], error: jinja2.UndefinedError) -> RowError:
        absent = [name for name in self.variables if name not in present and not (name == "row" and self.uses_row)]
        if absent:
            name = absent[0]
            return self._not_a_column(row, name) if name not in self._columns else self._missing(row, name)
        return RowError(row, self._sole_column(), f"the {self.option} template failed: {error.message}")

    def _blank(self, row: int, present: dict[str, Any]) -> RowError:
        empty = [name for name in self.used_columns if name in present and not present[name]]
        hint = f" (empty in this row: {', '.join(empty)})" if empty else ""
        return RowError(row, self._sole_column(), f"the {self.option} template gave only white space{hint}")

    def _sole_column(self) -> str | None:
        return self.used_columns[0] if len(self.used_columns) == 1 else None


def _substitutions(ast: jinja2.nodes.Template, columns: set[str]) -> list[tuple[str, str | None]] | None:
    """The template as (literal, column or None) pairs when it is only text and `{{ column }}`s, else None."""
    pieces: list[tuple[str, str | None]] = []
    literal: list[str] = []
    for node in ast.body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                literal.append(child.data)
            elif isinstance(child, jinja2.nodes.Name) and child.ctx == "load" and child.name in columns:
                pieces.append(("".join(literal), child.name))
                literal = []
            elif (
                isinstance(child, jinja2.nodes.Getitem)
                and isinstance(child.node, jinja2.nodes.Name)
                and child.node.name == "row"
                and "row" not in columns
                and isinstance(child.arg, jinja2.nodes.Const)
                and isinstance(child.arg.value, str)
                and child.arg.value in columns
            ):
                pieces.append(("".join(literal), child.arg.value))
                literal = []
            else:
                return None
    if literal:
        pieces.append(("".join(literal), None))
    return pieces


class RequestRenderer:
    """Renders rows into request lines for one spec and one table's columns; built once per file."""

    def __init__(self, spec: TableSpec, columns: list[str]) -> None:
        self.spec = spec
        self.columns = list(columns)
        self._prompt = _Template("--prompt", spec.prompt, self.columns) if spec.prompt is not None else None
        self._system = _Template("--system", spec.system, self.columns) if spec.system is not None else None
        # A system message without variables is the same in every line: part of the line's fixed bytes.
        self._fixed_system = self._system.constant if self._system is not None else None
        if self._fixed_system is not None:
            self._system = None
        self._parts = _line_parts(spec, with_system=self._system is not None, fixed_system=self._fixed_system)
        self._derive_ids = spec.id_column is None

    @property
    def unknown_names(self) -> list[str]:
        """Names the spec uses that are not among the columns: every row will fail on them (say it once)."""
        names = [*(t.names_not_in(self.columns) for t in (self._prompt, self._system) if t is not None)]
        flat = [name for group in names for name in group]
        for column in (self.spec.embed, self.spec.id_column, self.spec.route_column):
            if column is not None and column not in self.columns:
                flat.append(column)
        return list(dict.fromkeys(flat))

    def route_of(self, values: dict[str, Any]) -> Route:
        """The route --route-column asks for this row (see route_value); "batch" without the option."""
        column = self.spec.route_column
        return "batch" if column is None else route_value(values.get(column))

    def render(self, row: int, values: dict[str, Any]) -> bytes | RowError:
        """One row's request line, or why it has none."""
        batch = RowBatch(row, {name: [value] for name, value in values.items()})
        ((_row, line),) = self.render_batch(batch)
        return line

    def render_batch(self, batch: RowBatch) -> Iterator[tuple[int, bytes | RowError]]:
        """(row, line or error) for every row of the batch, in order."""
        first, rows = batch.first_row, batch.rows
        ids = self._ids(batch)
        if self._prompt is not None:
            texts = self._prompt.render_batch(batch)
        else:
            texts = self._embedding_texts(batch)
        if self._system is not None:
            lines = self._lines_with_system(ids, self._system.render_batch(batch), texts)
        else:
            lines = self._lines(ids, texts)
        for error in batch.errors:  # an unreadable row is its reader's error, whatever it renders to
            if first <= error.row < first + rows:
                lines[error.row - first] = error
        return zip(range(first, first + rows), lines, strict=True)

    def _lines(self, ids: list[str | RowError], texts: list[str | RowError]) -> list[bytes | RowError]:
        """Each row's line from its custom_id and text, or the first of their errors.

        The line's fixed parts are canonical and orjson escapes every CR, so a line whose values are
        ASCII (a check CPython answers without reading the string) or hold none of the three
        characters canonical_line rewrites is canonical as it is.
        """
        dumps, (before_id, before_text, after) = _dumps, self._parts
        lines: list[bytes | RowError] = []
        append = lines.append
        for custom_id, text in zip(ids, texts, strict=True):
            if type(custom_id) is RowError:
                append(custom_id)
            elif type(text) is RowError:
                append(text)
            else:
                line = b"".join((before_id, dumps(custom_id), before_text, dumps(text), after))
                if not (text.isascii() and custom_id.isascii()) and not (_plain(text) and _plain(custom_id)):
                    line = canonical_line(line)
                append(line)
        return lines

    def _lines_with_system(
        self, ids: list[str | RowError], systems: list[str | RowError], texts: list[str | RowError]
    ) -> list[bytes | RowError]:
        dumps, (before_id, before_system, before_text, after) = _dumps, self._parts
        lines: list[bytes | RowError] = []
        append = lines.append
        for custom_id, system, text in zip(ids, systems, texts, strict=True):
            if type(custom_id) is RowError:
                append(custom_id)
            elif type(text) is RowError:
                append(text)
            elif type(system) is RowError:
                append(system)
            else:
                line = b"".join(
                    (before_id, dumps(custom_id), before_system, dumps(system), before_text, dumps(text), after)
                )
                append(canonical_line(line))
        return lines

    def _ids(self, batch: RowBatch) -> list[str | RowError]:
        first, rows = batch.first_row, batch.rows
        if self._derive_ids:
            names = [name for name in self.columns if name in batch.columns] or list(batch.columns)
            lists = [batch.columns[name] for name in names]
            return [_derived_id(first + i, [cells[i] for cells in lists]) for i in range(rows)]
        column = self.spec.id_column
        assert column is not None
        cells = batch.columns.get(column)
        if cells is None:
            message = f"the --id-column `{column}` is not a column (columns: {_shown(self.columns)})"
            return [RowError(first + i, column, message) for i in range(rows)]
        return [
            cell if type(cell) is str and cell and not cell.isspace() else _id_problem(first + i, column, cell)
            for i, cell in enumerate(cells)
        ]

    def _embedding_texts(self, batch: RowBatch) -> list[str | RowError]:
        column = self.spec.embed
        assert column is not None
        first, rows = batch.first_row, batch.rows
        cells = batch.columns.get(column)
        if cells is None:
            message = f"the --embed column `{column}` is not a column (columns: {_shown(self.columns)})"
            return [RowError(first + i, column, message) for i in range(rows)]
        out: list[str | RowError] = []
        for i, cell in enumerate(cells):
            text = cell if type(cell) is str else "" if cell is None or cell is MISSING else str(cell)
            out.append(
                text
                if not _is_blank(text)
                else RowError(first + i, column, f"the --embed column `{column}` is empty in this row")
            )
        return out


def _id_problem(row: int, column: str, cell: Any) -> str | RowError:
    if cell is MISSING:
        return RowError(row, column, f"this row has no --id-column `{column}`")
    if cell is None or (isinstance(cell, str) and (not cell or cell.isspace())):
        return RowError(row, column, f"the --id-column `{column}` is empty in this row: every row needs its id")
    return str(cell)  # a number or a date from parquet: its text is the id


def _derived_id(row: int, cells: list[Any]) -> str:
    content = _dumps([None if cell is MISSING else cell for cell in cells], default=str)
    return f"row-{row}-{hashlib.sha256(content).hexdigest()[:12]}"


def _line_parts(spec: TableSpec, *, with_system: bool, fixed_system: str | None) -> list[bytes]:
    """The request line's bytes around the values each row fills in (custom_id, system, user or input).

    Serialized once with markers, so the line is exactly orjson.dumps of the whole request.
    """
    marker = f"batchline-{uuid.uuid4().hex}"
    slots = [f"{marker}-id"]
    body: dict[str, Any] = {"model": spec.model}
    if spec.embed is not None:
        body["input"] = f"{marker}-text"
    else:
        messages = []
        if with_system or fixed_system is not None:
            messages.append({"role": "system", "content": fixed_system or f"{marker}-system"})
        messages.append({"role": "user", "content": f"{marker}-text"})
        body["messages"] = messages
        if spec.max_tokens is not None:
            body["max_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        if spec.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": spec.schema_name, "strict": True, "schema": spec.schema},
            }
    if with_system:
        slots.append(f"{marker}-system")
    slots.append(f"{marker}-text")
    line = canonical_line(_dumps({"custom_id": slots[0], "method": "POST", "url": spec.url, "body": body}))
    parts: list[bytes] = []
    for slot in slots:
        quoted = _dumps(slot)
        before, found, line = line.partition(quoted)
        assert found and quoted not in line, "a marker appears once"
        parts.append(before)
    parts.append(line)
    return parts


def table_lines(path: Path, spec: TableSpec, *, batch_rows: int = 8192) -> Iterator[tuple[int, bytes | RowError]]:
    """(row, request line or error) for every row of the table at `path`, streaming, in input order."""
    fmt = spec.input_format or detect_format(str(path))
    renderer = RequestRenderer(spec, column_names(path, fmt))
    for batch in read_batches(path, fmt, batch_rows=batch_rows):
        yield from renderer.render_batch(batch)


def request_hash(line: bytes) -> str:
    """sha256 (hex) of what a request asks, whoever wrote the line: its url and body, custom_id left out.

    Canonical JSON (keys sorted, compact, escapes decoded), so two lines asking the same thing hash the
    same however they were spelt; integers of any size keep their value.
    """
    record = _hash_decode(line)
    return hashlib.sha256(_hash_encode({"url": record.get("url"), "body": record.get("body")})).hexdigest()

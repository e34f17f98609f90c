"""A table as the planner reads it: one (row, request line) per row, or the row's reason it has none.

The planner takes (line number, raw line) pairs; a table job's rows are numbered as its lines are, so
the errors and results of a row carry its row number. A row the spec cannot render (a template
naming a column the table lacks, an empty id or text) comes as an InvalidLine of code ``row_error``,
reported beside the invalid requests, and the other rows go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from batchline.datasets.rendering import RowError, table_lines
from batchline.datasets.spec import TableSpec, detect_format
from batchline.domain.request_line import InvalidLine

ROW_ERROR_CODE = "row_error"


def format_of(spec: TableSpec, name: str) -> str:
    """The table's format: the spec's, or the one its name says."""
    return spec.input_format or detect_format(name)


def request_lines(path: Path, spec: TableSpec) -> Iterator[tuple[int, bytes | InvalidLine]]:
    """Every row of the table at `path` as the planner's input."""
    for row, rendered in table_lines(path, spec):
        if isinstance(rendered, RowError):
            # The message names the row (and the column when known), as a person looking at the table counts.
            message = str(rendered) + (f" (column {rendered.column})" if rendered.column else "")
            yield row, InvalidLine(line=row, custom_id=None, code=ROW_ERROR_CODE, message=message)
        else:
            yield row, rendered

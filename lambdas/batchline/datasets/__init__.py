"""Tables in: a CSV, TSV, parquet file, JSONL of records or a folder of text files, one request per row.

`TableSpec` says what each row asks (spec.py), `read_batches` streams the rows (readers.py) and
`RequestRenderer` / `table_lines` turn them into the project's request lines (rendering.py), which the
planner then reads as it reads a JSONL file. Runs in the Plan Lambda as well as locally.
"""

from batchline.datasets.errors import RowError, SpecError, TableReadError
from batchline.datasets.readers import MISSING, RowBatch, column_names, read_batches
from batchline.datasets.rendering import RequestRenderer, request_hash, route_value, table_lines
from batchline.datasets.spec import TableSpec, detect_format, spec_digest

__all__ = [
    "MISSING",
    "RequestRenderer",
    "RowBatch",
    "RowError",
    "SpecError",
    "TableReadError",
    "TableSpec",
    "column_names",
    "detect_format",
    "read_batches",
    "request_hash",
    "route_value",
    "spec_digest",
    "table_lines",
]

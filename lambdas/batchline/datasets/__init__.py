"""Tables in: a CSV, TSV, parquet file, JSONL of records or a folder of text files, one request per row.

`TableSpec` says what each row asks (spec.py), `read_batches` streams the rows (readers.py) and
`RequestRenderer` / `table_lines` turn them into the project's request lines (rendering.py), which the
planner then reads as it reads a JSONL file. Runs in the Plan Lambda as well as locally.

Nothing is imported here: pyarrow and Jinja2 load with the module that needs them (readers.py,
rendering.py), so that reading a spec (spec.py) costs the command line nothing.
"""

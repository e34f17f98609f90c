"""A table job from the command line's options: its spec, its schema, and the file to upload.

`batchline local run DATA --prompt TEMPLATE --model M` (and `submit`, `estimate`) turns a table
into requests, one per row: DATA is a CSV, TSV, parquet or JSON Lines file of records, or a folder
of text files. The spec (the template, the model, the schema, ...) travels beside the table in the
input bucket; Plan renders the rows with it, and Finalize writes the results as a table.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from batchline.datasets.spec import TableSpec, detect_format, spec_digest


class TableOptionError(ValueError):
    """An option of a table job is wrong: the message names it and says what would do."""


def load_schema(value: str) -> dict[str, Any]:
    """`--schema`: a JSON Schema file, or `module:Model` naming a pydantic model (its JSON Schema)."""
    path = Path(value)
    if path.suffix == ".json" or path.is_file():
        try:
            schema = json.loads(path.read_text())
        except FileNotFoundError:
            raise TableOptionError(f"--schema {value}: no such file") from None
        except json.JSONDecodeError as exc:
            raise TableOptionError(f"--schema {value}: not JSON ({exc.msg} at line {exc.lineno})") from None
    elif ":" in value:
        module_name, _, attribute = value.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise TableOptionError(f"--schema {value}: cannot import {attribute} from {module_name} ({exc})") from None
        if not hasattr(model, "model_json_schema"):
            raise TableOptionError(f"--schema {value}: {attribute} is not a pydantic model")
        schema = model.model_json_schema()
    else:
        raise TableOptionError(f"--schema {value}: give a JSON Schema file (.json) or module:PydanticModel")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise TableOptionError(f'--schema {value}: the schema of an answer must be an object ("type": "object")')
    return strict_schema(schema)


def schema_option(schema: Any) -> tuple[dict[str, Any] | None, str]:
    """(the strict JSON Schema, its name) of a schema as either front end takes it: a JSON Schema
    dict, a pydantic model class, or `--schema`'s text (a file, or module:Model); (None, "answer")
    for none."""
    if schema is None:
        return None, "answer"
    if isinstance(schema, dict):
        given, name = schema, "answer"
    elif hasattr(schema, "model_json_schema"):
        given, name = schema.model_json_schema(), getattr(schema, "__name__", "answer")
    else:
        return load_schema(str(schema)), _schema_name(str(schema))
    if given.get("type") != "object":
        raise TableOptionError(f'schema {name}: the schema of an answer must be an object ("type": "object")')
    return strict_schema(given), name


def make_spec(
    data: Path,
    *,
    model: str,
    prompt: str | None,
    system: str | None,
    embed: str | None,
    schema: Any,
    id_column: str | None,
    columns: list[str] | None,
    output_format: str,
    flatten: bool,
    max_tokens: int | None,
) -> TableSpec:
    """The spec of a table job at `data` (a file or a folder), whichever front end describes it: the
    command line (table_spec) and Python (batchline_cli/api.py) give the same job the same spec."""
    strict, schema_name = schema_option(schema)
    fmt = "text" if data.is_dir() else detect_format(data.name)
    return TableSpec(
        model=model,
        prompt=prompt,
        system=system,
        embed=embed,
        schema=strict,
        schema_name=schema_name,
        id_column=id_column,
        columns=columns,
        max_tokens=max_tokens,
        output_format="csv" if output_format == "csv" else "parquet",
        flatten=flatten,
        input_format="jsonl" if fmt == "text" else fmt,  # a folder is uploaded as JSON Lines of records
    )


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as OpenAI's strict structured outputs take it: every object closed
    (additionalProperties false) with every property required, its definitions too."""

    def close(node: Any) -> Any:
        if isinstance(node, dict):
            node = {key: close(value) for key, value in node.items()}
            if node.get("type") == "object" or "properties" in node:
                node.setdefault("properties", {})
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            return node
        if isinstance(node, list):
            return [close(item) for item in node]
        return node

    closed: dict[str, Any] = close(schema)
    closed.pop("title", None)
    return closed


def table_spec(
    data: Path,
    *,
    model: str | None,
    prompt: str | None,
    system: str | None,
    embed: str | None,
    schema: str | None,
    id_column: str | None,
    columns: str | None,
    output_format: str,
    flatten: bool,
    max_tokens: int | None,
) -> TableSpec | None:
    """The spec the options describe; None when DATA is a request file (no --prompt, no --embed)."""
    if prompt is None and embed is None:
        others = {"--model": model, "--system": system, "--schema": schema, "--id-column": id_column}
        given = [name for name, value in others.items() if value]
        if given:
            raise TableOptionError(f"{', '.join(given)} go with --prompt or --embed (a table job)")
        return None
    if not model:
        raise TableOptionError("a table job needs --model (the model every row's request goes to)")
    if prompt is not None and prompt.startswith("@"):
        prompt = _read_template(prompt[1:], "--prompt")
    if system is not None and system.startswith("@"):
        system = _read_template(system[1:], "--system")
    return make_spec(
        data,
        model=model,
        prompt=prompt,
        system=system,
        embed=embed,
        schema=schema or None,
        id_column=id_column,
        columns=[name.strip() for name in columns.split(",") if name.strip()] if columns else None,
        output_format=output_format,
        flatten=flatten,
        max_tokens=max_tokens,
    )


def _read_template(path: str, option: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise TableOptionError(f"{option} @{path}: {exc.strerror}") from None


def _schema_name(schema: str | None) -> str:
    if not schema:
        return "answer"
    name = schema.rpartition(":")[2] if ":" in schema and not Path(schema).exists() else Path(schema).stem
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "answer"


@contextlib.contextmanager
def upload_file(data: Path) -> Iterator[Path]:
    """The file to upload for DATA: the file itself, or a folder of text files as JSON Lines of
    records ({"path", "text"}, in sorted path order), written to a temporary file."""
    if not data.is_dir():
        yield data
        return
    with tempfile.TemporaryDirectory(prefix="batchline-folder-") as scratch:
        target = Path(scratch) / f"{data.name or 'texts'}.jsonl"
        with target.open("wb") as out:
            for path in sorted(p for p in data.rglob("*") if p.is_file()):
                text = path.read_bytes().decode("utf-8", errors="replace")
                out.write(orjson.dumps({"path": str(path.relative_to(data)), "text": text}) + b"\n")
        yield target


def spec_bytes(spec: TableSpec) -> tuple[str, bytes]:
    """(digest, JSON) of the spec as it is put beside the table."""
    import msgspec

    return spec_digest(spec), msgspec.json.encode(spec)

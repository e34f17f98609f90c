"""What a table job asks for: one request per row, built from the row's columns.

`TableSpec` is what the command line's `--prompt`, `--embed`, `--schema`, ... become; it is checked
once, when it is built, and a mistake is a `SpecError` naming the option. `spec_digest` identifies
the spec in a job's identity: the same options give the same digest on every machine.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import jinja2
import msgspec

from batchline.datasets.errors import SpecError

__all__ = ["FORMATS", "SpecError", "TableSpec", "detect_format", "spec_digest"]

InputFormat = Literal["csv", "tsv", "parquet", "jsonl", "text"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "jsonl", "text")

# File name endings and the format each one means (lower-cased before the look-up).
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
# What OpenAI accepts as response_format.json_schema.name.
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class TableSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One request per row: a chat (`prompt`, and `system`) or an embedding (`embed`), not both.

    Templates are Jinja2 over the row's columns (see rendering.py for what a template sees); they are
    parsed here, so a syntax error is reported before the file is read.
    """

    model: str
    prompt: str | None = None
    system: str | None = None
    embed: str | None = None
    schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    id_column: str | None = None
    route_column: str | None = None
    columns: list[str] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    output_format: Literal["parquet", "csv"] = "parquet"
    flatten: bool = False
    input_format: InputFormat | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def is_embedding(self) -> bool:
        return self.embed is not None

    @property
    def url(self) -> str:
        return "/v1/embeddings" if self.embed is not None else "/v1/chat/completions"


def _check(spec: TableSpec) -> None:
    if not spec.model.strip():
        raise SpecError("--model must name a model")
    if (spec.prompt is None) == (spec.embed is None):
        raise SpecError(
            "give exactly one of --prompt (a chat request per row) and --embed (an embedding of a column per row)"
            if spec.prompt is None
            else "--prompt and --embed cannot be used together: a row gives either a chat request or an embedding"
        )
    if spec.embed is not None:
        if not spec.embed.strip():
            raise SpecError("--embed must name a column")
        for option, value in (
            ("--system", spec.system),
            ("--schema", spec.schema),
            ("--max-tokens", spec.max_tokens),
            ("--temperature", spec.temperature),
        ):
            if value is not None:
                raise SpecError(f"{option} applies to chat requests (--prompt), not to embeddings (--embed)")
        if spec.flatten:
            raise SpecError("--flatten applies to answers with a --schema, not to embeddings (--embed)")
    if spec.input_format is not None and spec.input_format not in FORMATS:
        raise SpecError(f"--input-format must be one of {', '.join(FORMATS)}, got {spec.input_format!r}")
    if spec.output_format not in ("parquet", "csv"):
        raise SpecError(f"--output-format must be parquet or csv, got {spec.output_format!r}")
    for option, template in (("--prompt", spec.prompt), ("--system", spec.system)):
        if template is not None:
            _check_template(option, template)
    if spec.schema is not None and not spec.schema:
        raise SpecError("--schema is an empty JSON Schema: give the object the answers must match")
    if not _SCHEMA_NAME.fullmatch(spec.schema_name):
        raise SpecError(
            f"--schema-name {spec.schema_name!r} must be 1 to 64 letters, digits, '_' or '-' "
            "(OpenAI's rule for the name)"
        )
    if spec.flatten and spec.schema is None:
        raise SpecError("--flatten spreads the fields of a --schema over columns: it needs --schema")
    if spec.max_tokens is not None and spec.max_tokens < 1:
        raise SpecError(f"--max-tokens must be at least 1, got {spec.max_tokens}")
    if spec.temperature is not None and not 0 <= spec.temperature <= 2:
        raise SpecError(f"--temperature must be between 0 and 2, got {spec.temperature}")
    for option, column in (("--id-column", spec.id_column), ("--route-column", spec.route_column)):
        if column is not None and not column:
            raise SpecError(f"{option} must name a column")
    if spec.columns is not None:
        if not spec.columns or any(not column for column in spec.columns):
            raise SpecError("--columns must name at least one column, and no empty names")
        repeated = sorted({column for column in spec.columns if spec.columns.count(column) > 1})
        if repeated:
            raise SpecError(f"--columns names {', '.join(repeated)} more than once")


def _check_template(option: str, template: str) -> None:
    if not template.strip():
        raise SpecError(f"{option} is empty: give the template of the message (Jinja2, e.g. '{{{{ review }}}}')")
    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as error:
        raise SpecError(f"{option} is not a valid Jinja2 template: {error.message} (line {error.lineno})") from None


def spec_digest(spec: TableSpec) -> str:
    """sha256 (hex) of the spec's canonical JSON: fields and schema keys sorted, every field present.

    The whole spec counts, output options included: two runs with the same file and digest are the
    same job.
    """
    return hashlib.sha256(msgspec.json.encode(spec, order="sorted")).hexdigest()


def detect_format(name: str) -> str:
    """The input format a path's name says: its suffix (any case), or "text" for a directory.

    `.jsonl` / `.ndjson` here means JSON records (one object a row), the table kind of JSONL; a file
    of ready-made requests is read by the request path, not by this package.
    """
    path = Path(name)
    if path.is_dir():
        return "text"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        accepted = ", ".join(sorted(_SUFFIXES))
        raise SpecError(
            f"cannot tell the format of {name!r} from its name: accepted endings are {accepted}, or a folder "
            f"of text files; or give --input-format ({', '.join(FORMATS)})"
        )
    return fmt

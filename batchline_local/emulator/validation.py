"""Checks on a batch input file, split the way OpenAI splits them.

File-level problems (too big, too many lines, not UTF-8) are refused at upload with a 400, so
nothing is stored. Line-level problems (a line that is not a JSON object, duplicate custom_id,
mixed models, a url that does not match the batch's endpoint, a missing field) are only found when
a batch is validated: the upload succeeds and the batch then ends ``failed`` with one
``errors.data`` entry per problem, each naming its 1-based line. Batchline must cope with both, so
the emulator reproduces both.

Lines are split as the provider splits them, with ``str.splitlines``: besides ``\n`` it breaks at
``\r``, ``\x0b``, ``\x0c``, ``\x1c``-``\x1e``, U+0085, U+2028 and U+2029, so a request holding
one of these raw reads as two lines that are not JSON objects (``invalid_json_line``), and every
line after it is numbered one further on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchline.settings import BATCH_ENDPOINTS

from .errors import InvalidRequest

REQUIRED_LINE_FIELDS = ("custom_id", "method", "url", "body")


@dataclass(frozen=True)
class BatchLine:
    """One valid request of a batch input file."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    """One entry of a failed batch's ``errors.data``."""

    code: str
    line: int | None
    message: str
    param: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}


@dataclass(frozen=True)
class BatchPlan:
    """The outcome of validating an input file against a batch endpoint: requests, or the errors."""

    requests: tuple[BatchLine, ...]
    model: str | None
    errors: tuple[LineError, ...]


_NOT_JSON = object()


def _json_lines(content: bytes) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; _NOT_JSON where the line does not parse."""
    text = content.decode("utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError:
            yield number, _NOT_JSON


def check_batch_upload(content: bytes, *, max_bytes: int, max_requests: int) -> None:
    """Refuse an upload of purpose ``batch`` that OpenAI would refuse before storing it."""
    if len(content) > max_bytes:
        raise InvalidRequest(
            f"File is too large: {len(content)} bytes. Batch input files may be at most {max_bytes} bytes.",
            param="file",
            code="file_too_large",
        )
    try:
        lines = list(_json_lines(content))
    except UnicodeDecodeError:
        raise InvalidRequest(
            "Invalid file format for Batch API. The file must be UTF-8 encoded JSONL.",
            param="file",
            code="invalid_file_format",
        ) from None
    if len(lines) > max_requests:
        raise InvalidRequest(
            f"The file has {len(lines)} requests; a batch input file may hold at most {max_requests}.",
            param="file",
            code="too_many_requests_in_file",
        )


def _line_errors(number: int, value: Any, endpoint: str) -> list[LineError]:
    """Problems of one line on its own; cross-line checks (duplicates, mixed models) come later."""
    if not isinstance(value, dict):
        return [LineError("invalid_json_line", number, "This line is not parseable as valid JSON.", None)]
    errors = [
        LineError("missing_required_parameter", number, f"Missing required parameter: '{field}'.", field)
        for field in REQUIRED_LINE_FIELDS
        if value.get(field) is None
    ]
    if errors:
        return errors
    custom_id, method, url, body = (value[field] for field in REQUIRED_LINE_FIELDS)
    if not isinstance(custom_id, str) or not custom_id:
        errors.append(LineError("invalid_custom_id", number, "custom_id must be a non-empty string.", "custom_id"))
    if method != "POST":
        errors.append(LineError("invalid_method", number, "The method must be 'POST'.", "method"))
    if url not in BATCH_ENDPOINTS:
        errors.append(
            LineError("invalid_url", number, f"The url '{url}' is not an endpoint the Batch API supports.", "url")
        )
    elif url != endpoint:
        errors.append(
            LineError(
                "mismatched_endpoint",
                number,
                f"The url '{url}' does not match the batch endpoint '{endpoint}'.",
                "url",
            )
        )
    if not isinstance(body, dict):
        errors.append(LineError("invalid_body", number, "The body must be a JSON object.", "body"))
    elif not isinstance(body.get("model"), str) or not body["model"]:
        errors.append(
            LineError(
                "missing_required_parameter",
                number,
                "Missing required parameter: 'body.model'.",
                "body.model",
            )
        )
    return errors


def plan_batch(content: bytes, endpoint: str) -> BatchPlan:
    """Validate every line of an input file for ``endpoint``, collecting all problems, not just the first."""
    try:
        lines = list(_json_lines(content))
    except UnicodeDecodeError:
        error = LineError("invalid_file_format", None, "The input file is not UTF-8 encoded JSONL.", None)
        return BatchPlan(requests=(), model=None, errors=(error,))
    if not lines:
        error = LineError("empty_file", None, "The batch input file is empty.", None)
        return BatchPlan(requests=(), model=None, errors=(error,))

    errors: list[LineError] = []
    requests: list[BatchLine] = []
    seen_custom_ids: set[str] = set()
    model: str | None = None
    for number, value in lines:
        problems = _line_errors(number, value, endpoint)
        if problems:
            errors.extend(problems)
            continue
        custom_id, body = value["custom_id"], value["body"]
        if custom_id in seen_custom_ids:
            errors.append(
                LineError(
                    "duplicate_custom_id",
                    number,
                    "The custom_id for this request is a duplicate of another request. "
                    "The custom_id parameter must be unique for each request in a batch.",
                    "custom_id",
                )
            )
            continue
        seen_custom_ids.add(custom_id)
        if model is None:
            model = body["model"]
        elif body["model"] != model:
            errors.append(
                LineError(
                    "mismatched_model",
                    number,
                    f"The provided model '{body['model']}' does not match the model '{model}' used by "
                    "the previous lines. Every request in a batch must use the same model.",
                    "body.model",
                )
            )
            continue
        requests.append(BatchLine(line=number, custom_id=custom_id, url=value["url"], body=body))
    if errors:
        return BatchPlan(requests=(), model=model, errors=tuple(errors))
    return BatchPlan(requests=tuple(requests), model=model, errors=())

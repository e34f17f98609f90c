"""The functions' logs never carry an exception's message: it may quote a prompt, an answer or a custom_id."""

from __future__ import annotations

import io
import json

from batchline.observability import error_fields, logger

SECRET = "Summarise this confidential memo for the board"


def logged_lines(emit) -> tuple[str, list[dict]]:
    handler = logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        emit()
    finally:
        handler.setStream(previous)
    text = buffer.getvalue()
    return text, [json.loads(line) for line in text.splitlines()]


def fail_on(prompt: str) -> None:
    raise ValueError(f"could not read {prompt!r}")


def test_a_logged_exception_names_its_type_and_frames_but_never_its_message():
    def emit():
        try:
            fail_on(SECRET)
        except ValueError as exc:
            logger.exception("shard failed", extra=error_fields(exc))

    text, (line,) = logged_lines(emit)
    assert SECRET not in text
    assert line["exception_name"] == "ValueError"
    assert "in fail_on" in line["exception"] and line["exception"].endswith("ValueError")
    assert "stack_trace" not in line  # Powertools' serialized stack trace holds the message as "value"
    assert line["error_type"] == "ValueError"
    assert line["error_at"].startswith("test_log_redaction.py:")


def test_error_fields_of_an_error_never_raised_still_name_its_type():
    assert error_fields(KeyError(SECRET)) == {"error_type": "KeyError", "error_at": ""}

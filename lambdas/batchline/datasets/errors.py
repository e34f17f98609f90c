"""The two ways a table job goes wrong: the whole spec (one message, before anything is read) or one row."""

from __future__ import annotations

from dataclasses import dataclass


class SpecError(ValueError):
    """The options describe no job that can run; the message names the option to change."""


class TableReadError(ValueError):
    """The file cannot be read as a table at all (not a single row could be trusted); names the file."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One input row that gives no request. Every other row is still rendered and sent.

    `row` counts data rows from 1 in input order (a CSV header is not a row); `column` is the column
    at fault when one is known.
    """

    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"

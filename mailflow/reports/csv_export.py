"""An alert's table of organisations as CSV: UTF-8 with a header, ISO 8601
times, written row by row to a stream (a national alert has 20,000 rows),
and safe to open in a spreadsheet (no cell runs as a formula)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import TextIO

from mailflow.core.text import safe_cell

COLUMNS = (
    "code",
    "name",
    "type",
    "parent_code",
    "status",
    "note",
    "reason",
    "mitigations",
    "answered_by",
    "answered_at",
    "first_answered_at",
    "next_update_on",
    "overdue",
    "bounced",
)
HEADER = ("alert", *COLUMNS)


def cell(value: object) -> str:
    """One value as text: times and dates in ISO 8601, flags as yes/no,
    nothing as empty; text neutralised if it would start a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return safe_cell(str(value))


class CsvWriter:
    """Writes the header once, then rows as they come."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\r\n")
        self._writer.writerow(HEADER)

    def write_rows(self, reference: str, rows: Iterable[Sequence[object]]) -> None:
        for row in rows:
            self._writer.writerow([cell(reference), *(cell(value) for value in row)])


def write_table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Any other table (an organisation's answers), written the same way."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])

"""Long lists in the alert commands, kept readable: a national alert goes
to 20,000 organisations, and a publisher at a terminal wants the counts
and the first few, with `--all` for the whole list and `--csv` for a
spreadsheet.  Each piece is a function of its own, for the commands in
alert_report_command and alert_command to call."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TextIO, TypeVar

import click

from mailflow.alerts.reports import DeliveryLine, DeliveryReport, StatusReport
from mailflow.answers.recording import StatusLine
from mailflow.answers.statuses import AnswerStatus
from mailflow.reports.csv_export import write_table

# How many of a long list a terminal shows unless asked for all.
SHOWN = 10
# How many organisations `alert issue` names when it could email no one.
SKIPPED_NAMED = 5
MORE_HINT = "--all to list them, --csv for a spreadsheet"

T = TypeVar("T")

DELIVERY_HEADER = ("recipient", "organisations", "state", "attempts", "last_error", "sent_at")
STATUS_HEADER = (
    "organisation",
    "name",
    "status",
    "overdue",
    "answered_by",
    "answered_at",
    "within_deadline",
    "expected_on",
    "update_due_on",
    "note",
    "reason",
    "mitigations",
)


def first_of(items: Sequence[T], *, show_all: bool, shown: int = SHOWN) -> tuple[Sequence[T], int]:
    """The items to print, and how many are left out."""
    if show_all or len(items) <= shown:
        return items, 0
    return items[:shown], len(items) - shown


def more_line(hidden: int, noun: str) -> str:
    return f"... and {hidden:,} more {noun} ({MORE_HINT})"


def audience_text(audience: Sequence[str], *, show_all: bool) -> str:
    """The audience's codes, the first few of a long one."""
    shown, hidden = first_of(audience, show_all=show_all)
    more = f" and {hidden:,} more ({MORE_HINT})" if hidden else ""
    return ", ".join(shown) + more


def print_deliveries(deliveries: Sequence[DeliveryLine], *, show_all: bool) -> None:
    click.echo(f"{'recipient':36} {'organisations':16} {'state':9} {'tries':>5}  last error")
    shown, hidden = first_of(deliveries, show_all=show_all)
    for line in shown:
        click.echo(
            f"{line.recipient:36} {','.join(line.organisations):16} {line.state:9} "
            f"{line.attempts:>5}  {line.last_error or ''}"
        )
    if hidden:
        click.echo(more_line(hidden, "emails"))


def write_deliveries_csv(report: DeliveryReport, out: TextIO) -> None:
    """Every email of the alert, with a header."""
    rows = (
        (
            line.recipient,
            " ".join(line.organisations),
            line.state,
            line.attempts,
            line.last_error,
            line.sent_at,
        )
        for line in report.deliveries
    )
    write_table(out, DELIVERY_HEADER, rows)


def unanswered_only(report: StatusReport) -> StatusReport:
    """The report with only the organisations that have not answered."""
    lines = [line for line in report.organisations if line.status is None]
    return StatusReport(alert=report.alert, organisations=lines, overdue=report.overdue)


def status_counts_text(lines: Sequence[StatusLine]) -> str:
    """How many organisations have each status, most first."""
    counts = Counter(
        AnswerStatus(line.status).label.lower() if line.status else "no answer" for line in lines
    )
    return ", ".join(f"{n:,} {label}" for label, n in counts.most_common())


def write_status_csv(report: StatusReport, out: TextIO) -> None:
    """Every organisation of the report, with a header."""
    rows = (
        (
            line.code,
            line.name,
            line.status or "",
            line.status is None and line.code in report.overdue,
            line.answered_by,
            line.answered_at,
            line.within_deadline,
            line.expected_on,
            line.update_due_on,
            line.note,
            line.reason,
            line.mitigations,
        )
        for line in report.organisations
    )
    write_table(out, STATUS_HEADER, rows)


def skipped_text(codes: Sequence[str]) -> str:
    """The organisations an alert reached no one at: a few named, all
    counted."""
    named, hidden = first_of(codes, show_all=False, shown=SKIPPED_NAMED)
    listed = ", ".join(named) + (f" and {hidden:,} more" if hidden else "")
    if len(codes) <= SKIPPED_NAMED:
        return listed
    return f"{len(codes):,} organisations: {listed}"

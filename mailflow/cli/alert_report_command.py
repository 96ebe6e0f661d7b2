"""`mailflow alert show|status|list`: following an alert's emails and
answers.  The reports are read in the domain; this prints them."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from mailflow.alerts.reports import (
    AlertFacts,
    AlertListLine,
    DeliveryLine,
    DeliveryReport,
    StatusReport,
    alert_list,
    delivery_report,
    status_report,
)
from mailflow.answers.recording import StatusLine
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli import alert_long_lists
from mailflow.cli.alert_watch import WATCH_SECONDS, watch_fanout
from mailflow.cli.context import Context, fail, pass_context, reported_errors
from mailflow.core.mail.templates import counted, format_time


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def lifecycle_data(facts: AlertFacts) -> dict[str, Any]:
    return {
        "round": facts.round,
        "closed_at": _iso(facts.closed_at),
        "closed_reason": facts.closed_reason,
    }


def print_lifecycle(facts: AlertFacts, zone: ZoneInfo) -> None:
    """The round (when an update has started another) and whether the
    alert is closed, under the deadline."""
    if facts.round > 1:
        click.echo(f"round     {facts.round} (answers asked for again by an update)")
    if facts.closed_at is not None:
        reason = f": {facts.closed_reason}" if facts.closed_reason else ""
        click.echo(f"closed    {format_time(facts.closed_at, zone)}{reason}")


ALL_HELP = f"List every organisation and email, not only the first {alert_long_lists.SHOWN}."


@click.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every email as CSV, with a header.")
@click.option("--all", "show_all", is_flag=True, help=ALL_HELP)
@click.option(
    "--watch",
    is_flag=True,
    help="Instead, print how many emails are sent, every couple of seconds, until all are "
    "sent or failed.",
)
@click.option(
    "--every",
    type=click.FloatRange(min=0.1, max=3600),
    default=WATCH_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="With --watch: how often to look.",
)
@pass_context
def alert_show(
    ctx: Context,
    reference: str,
    as_json: bool,
    as_csv: bool,
    show_all: bool,
    watch: bool,
    every: float,
) -> None:
    """Show an alert and the state of each of its emails:
    queued, sending, sent, deferred, failed or bounced.  A long audience
    is summarised: the counts and the first few (--all for every one)."""
    one_format(as_json=as_json, as_csv=as_csv)
    if watch and (as_json or as_csv or show_all):
        raise click.UsageError("--watch prints a line at a time: leave out --json, --csv and --all")
    if watch:
        watch_fanout(ctx, reference, every)
        return
    with reported_errors(), ctx.reading() as session:
        report = delivery_report(session, reference)
    if as_json:
        click.echo(json.dumps(delivery_report_data(report), indent=2))
    elif as_csv:
        alert_long_lists.write_deliveries_csv(report, sys.stdout)
    else:
        print_delivery_report(report, ctx.settings.zone, show_all=show_all)


def one_format(*, as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        fail("give --json or --csv, not both")


def delivery_report_data(report: DeliveryReport) -> dict[str, Any]:
    facts = report.alert
    return {
        "reference": facts.reference,
        "title": facts.title,
        "severity": facts.severity,
        "response_required": facts.response_required,
        "issued_at": facts.issued_at.isoformat(),
        "issued_by": facts.issued_by,
        "deadline_at": facts.deadline_at.isoformat(),
        "summary": facts.summary,
        "affected": facts.affected,
        "cves": facts.cves,
        "remediation": facts.remediation,
        "references": facts.references,
        **lifecycle_data(facts),
        "audience": report.audience,
        "delivery_counts": report.delivery_counts,
        "deliveries": [delivery_line_data(line) for line in report.deliveries],
    }


def delivery_line_data(line: DeliveryLine) -> dict[str, Any]:
    return {
        "recipient": line.recipient,
        "organisations": line.organisations,
        "state": line.state,
        "attempts": line.attempts,
        "last_error": line.last_error,
        "message_id": line.message_id,
        "sent_at": line.sent_at.isoformat() if line.sent_at else None,
    }


def print_delivery_report(report: DeliveryReport, zone: ZoneInfo, *, show_all: bool) -> None:
    facts = report.alert
    click.echo(f"{facts.reference}  [{facts.severity.upper()}]  {facts.title}")
    click.echo(f"issued    {format_time(facts.issued_at, zone)} by {facts.issued_by}")
    click.echo(
        f"deadline  {format_time(facts.deadline_at, zone)}"
        + ("" if facts.response_required else " (response not required)")
    )
    print_lifecycle(facts, zone)
    audience = report.audience
    codes = alert_long_lists.audience_text(audience, show_all=show_all)
    click.echo(f"audience  {counted(len(audience), 'organisation')}: {codes}")
    counts = report.delivery_counts.items()
    click.echo(f"emails    {', '.join(f'{n} {state}' for state, n in counts) or 'none'}")
    click.echo("")
    alert_long_lists.print_deliveries(report.deliveries, show_all=show_all)


@click.command("status")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every organisation as CSV.")
@click.option("--all", "show_all", is_flag=True, help=ALL_HELP)
@click.option("--unanswered", is_flag=True, help="Only the organisations with no answer yet.")
@pass_context
def alert_status(
    ctx: Context, reference: str, as_json: bool, as_csv: bool, show_all: bool, unanswered: bool
) -> None:
    """Show each organisation in the alert's audience with its current
    status (or "no answer", or "overdue" once the deadline has passed
    without one), its further information, who answered and when, and
    whether it was within the deadline.  A long audience is summarised:
    the counts and the first few (--all for every one)."""
    one_format(as_json=as_json, as_csv=as_csv)
    with reported_errors(), ctx.reading() as session:
        report = status_report(session, reference)
    whole = report
    if unanswered:
        report = alert_long_lists.unanswered_only(report)
    if as_json:
        click.echo(json.dumps(status_report_data(report), indent=2))
    elif as_csv:
        alert_long_lists.write_status_csv(report, sys.stdout)
    else:
        today = ctx.runtime.clock().astimezone(ctx.settings.zone).date()
        print_status_report(whole, ctx.settings.zone, today)
        print_status_lines(report, ctx.settings.zone, today, show_all=show_all)


def status_report_data(report: StatusReport) -> dict[str, Any]:
    facts = report.alert
    return {
        "reference": facts.reference,
        "title": facts.title,
        "deadline_at": facts.deadline_at.isoformat(),
        **lifecycle_data(facts),
        "overdue": len(report.overdue),
        "organisations": [
            status_line_data(line, overdue=line.code in report.overdue)
            for line in report.organisations
        ],
    }


def status_line_data(line: StatusLine, *, overdue: bool) -> dict[str, Any]:
    return {
        "organisation": line.code,
        "name": line.name,
        "status": line.status,
        "overdue": overdue,
        "note": line.note,
        "reason": line.reason,
        "mitigations": line.mitigations,
        "expected_on": line.expected_on.isoformat() if line.expected_on else None,
        "update_due_on": line.update_due_on.isoformat() if line.update_due_on else None,
        "answered_by": line.answered_by,
        "answered_at": line.answered_at.isoformat() if line.answered_at else None,
        "first_answered_at": (
            line.first_answered_at.isoformat() if line.first_answered_at else None
        ),
        "within_deadline": line.within_deadline,
    }


def print_status_report(report: StatusReport, zone: ZoneInfo, today: date) -> None:
    """The alert and its counts (of the whole audience)."""
    facts = report.alert
    lines = report.organisations
    answered = sum(1 for line in lines if line.status)
    click.echo(f"{facts.reference}  {facts.title}")
    click.echo(f"deadline  {format_time(facts.deadline_at, zone)}")
    print_lifecycle(facts, zone)
    click.echo(f"answered  {answered} of {counted(len(lines), 'organisation')}")
    if report.overdue:
        click.echo(f"overdue   {len(report.overdue)} (no answer by the deadline)")
    if len(lines) > alert_long_lists.SHOWN:
        click.echo(f"statuses  {alert_long_lists.status_counts_text(lines)}")
    click.echo("")


def print_status_lines(
    report: StatusReport, zone: ZoneInfo, today: date, *, show_all: bool
) -> None:
    """Each organisation's line, the first few of a long list."""
    shown, hidden = alert_long_lists.first_of(report.organisations, show_all=show_all)
    for line in shown:
        print_status_line(line, zone, today, overdue=line.code in report.overdue)
    if hidden:
        click.echo(alert_long_lists.more_line(hidden, "organisations"))


def due_date_text(due_on: date | None, today: date) -> str | None:
    """The date an update is due, and whether it is overdue."""
    if due_on is None:
        return None
    return f"{due_on.isoformat()} (overdue)" if due_on < today else due_on.isoformat()


def print_status_line(line: StatusLine, zone: ZoneInfo, today: date, *, overdue: bool) -> None:
    if line.status is None:
        click.echo(f"{line.code:10} {'overdue' if overdue else 'no answer'}")
        return
    timing = "within the deadline" if line.within_deadline else "after the deadline"
    when = format_time(line.answered_at, zone) if line.answered_at else ""
    click.echo(
        f"{line.code:10} {AnswerStatus(line.status).label}  by {line.answered_by} {when} ({timing})"
    )
    due = "review due" if line.status == AnswerStatus.UNABLE else "next update due"
    for label, value in (
        ("expected", line.expected_on.isoformat() if line.expected_on else None),
        (due, due_date_text(line.update_due_on, today)),
        ("reason", line.reason),
        ("mitigations", line.mitigations),
        ("note", line.note),
    ):
        if value:
            click.echo(f"{'':10} {label}: {value}")


@click.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def alert_list_command(ctx: Context, limit: int, as_json: bool) -> None:
    """List the latest alerts, newest first: open or closed, the round of
    answers, and how many organisations have answered."""
    with ctx.reading() as session:
        lines = alert_list(session, limit=limit)
    if as_json:
        click.echo(json.dumps([alert_list_line_data(line) for line in lines], indent=2))
        return
    for line in lines:
        click.echo(alert_list_text(line, ctx.settings.zone))


def alert_list_line_data(line: AlertListLine) -> dict[str, Any]:
    return {
        "reference": line.reference,
        "title": line.title,
        "severity": line.severity,
        "issued_at": line.issued_at.isoformat(),
        "deadline_at": line.deadline_at.isoformat(),
        "round": line.round,
        "state": "closed" if line.closed_at else "open",
        "closed_at": _iso(line.closed_at),
        "organisations": line.organisations,
        "answered": line.answered,
    }


def alert_list_text(line: AlertListLine, zone: ZoneInfo) -> str:
    state = "closed" if line.closed_at else "open"
    round_ = f" round {line.round}" if line.round > 1 else ""
    return (
        f"{line.reference:10} {line.severity.upper():8} {state:6} "
        f"{line.answered:>5}/{line.organisations:<5} answered{round_}  "
        f"deadline {format_time(line.deadline_at, zone)}  {line.title}"
    )

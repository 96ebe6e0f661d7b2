"""`mailflow alert issue|show|status`: issuing alerts and following their
emails and answers.  The reports are read in the domain; this prints them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from mailflow.alerts.alert_files import read_alert_file
from mailflow.alerts.issuing import IssuedAlert, issue_alert
from mailflow.alerts.reports import (
    DeliveryLine,
    DeliveryReport,
    StatusReport,
    delivery_report,
    status_report,
)
from mailflow.answers.recording import StatusLine
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli.context import Context, actor_name, pass_context, reported_errors
from mailflow.core.mail.templates import counted, format_time
from mailflow.workers.queue import JobQueue


@click.group()
def alert() -> None:
    """Alerts: issue them and follow their delivery."""


@alert.command("issue")
@click.argument("file", type=click.Path(path_type=Path))
@pass_context
def alert_issue(ctx: Context, file: Path) -> None:
    """Issue the alert described in FILE (TOML or JSON) and queue its emails.

    Fields: reference (optional), title, severity (critical|high|medium|low),
    summary, affected, cves, remediation, references, deadline_hours
    (default 48), [audience] organisations and/or types (default: every
    open organisation).  Prints the reference."""
    with reported_errors():
        spec = read_alert_file(file)
        with ctx.transaction() as session:
            issued = issue_alert(
                session,
                spec,
                now=ctx.runtime.clock(),
                actor=actor_name(),
                mail_domain=ctx.settings.mail_domain,
            )
            reference = issued.alert.reference
    click.echo(reference)
    report_queued(issued)
    if ctx.settings.broker_url:
        hand_to_broker(ctx)
    else:
        click.echo("`mailflow serve` (or `mailflow worker`) sends them.", err=True)


def report_queued(issued: IssuedAlert) -> None:
    click.echo(
        f"{counted(issued.recipients, 'email')} queued for "
        f"{counted(issued.organisations, 'organisation')}",
        err=True,
    )
    if issued.organisations_without_recipients:
        click.echo(
            "warning: no one to email at " + ", ".join(issued.organisations_without_recipients),
            err=True,
        )


def hand_to_broker(ctx: Context) -> None:
    # Hand the job to the broker now; if it cannot be reached, the job
    # waits in the database and a worker's dispatcher sends it later.
    try:
        queue = JobQueue(ctx.runtime)
        try:
            queue.dispatch_due()
        finally:
            queue.close()
    except Exception as exc:  # the broker's client raises many kinds
        click.echo(
            f"warning: the broker could not be reached ({exc!r}); "
            "a worker will pick the emails up when it runs",
            err=True,
        )


@alert.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def alert_show(ctx: Context, reference: str, as_json: bool) -> None:
    """Show an alert and the state of each of its emails:
    queued, sending, sent, deferred, failed or bounced."""
    with reported_errors(), ctx.transaction() as session:
        report = delivery_report(session, reference)
    if as_json:
        click.echo(json.dumps(delivery_report_data(report), indent=2))
    else:
        print_delivery_report(report, ctx.settings.zone)


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


def print_delivery_report(report: DeliveryReport, zone: ZoneInfo) -> None:
    facts = report.alert
    click.echo(f"{facts.reference}  [{facts.severity.upper()}]  {facts.title}")
    click.echo(f"issued    {format_time(facts.issued_at, zone)} by {facts.issued_by}")
    click.echo(
        f"deadline  {format_time(facts.deadline_at, zone)}"
        + ("" if facts.response_required else " (response not required)")
    )
    audience = report.audience
    click.echo(f"audience  {counted(len(audience), 'organisation')}: {', '.join(audience)}")
    counts = report.delivery_counts.items()
    click.echo(f"emails    {', '.join(f'{n} {state}' for state, n in counts) or 'none'}")
    click.echo("")
    click.echo(f"{'recipient':36} {'organisations':16} {'state':9} {'tries':>5}  last error")
    for line in report.deliveries:
        click.echo(
            f"{line.recipient:36} {','.join(line.organisations):16} {line.state:9} "
            f"{line.attempts:>5}  {line.last_error or ''}"
        )


@alert.command("status")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def alert_status(ctx: Context, reference: str, as_json: bool) -> None:
    """Show each organisation in the alert's audience with its current
    status (or "no answer"), its further information, who answered and
    when, and whether it was within the deadline."""
    with reported_errors(), ctx.transaction() as session:
        report = status_report(session, reference)
    if as_json:
        click.echo(json.dumps(status_report_data(report), indent=2))
    else:
        print_status_report(report, ctx.settings.zone)


def status_report_data(report: StatusReport) -> dict[str, Any]:
    facts = report.alert
    return {
        "reference": facts.reference,
        "title": facts.title,
        "deadline_at": facts.deadline_at.isoformat(),
        "organisations": [status_line_data(line) for line in report.organisations],
    }


def status_line_data(line: StatusLine) -> dict[str, Any]:
    return {
        "organisation": line.code,
        "name": line.name,
        "status": line.status,
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


def print_status_report(report: StatusReport, zone: ZoneInfo) -> None:
    facts = report.alert
    lines = report.organisations
    answered = sum(1 for line in lines if line.status)
    click.echo(f"{facts.reference}  {facts.title}")
    click.echo(f"deadline  {format_time(facts.deadline_at, zone)}")
    click.echo(f"answered  {answered} of {counted(len(lines), 'organisation')}")
    click.echo("")
    for line in lines:
        print_status_line(line, zone)


def print_status_line(line: StatusLine, zone: ZoneInfo) -> None:
    if line.status is None:
        click.echo(f"{line.code:10} no answer")
        return
    timing = "within the deadline" if line.within_deadline else "after the deadline"
    when = format_time(line.answered_at, zone) if line.answered_at else ""
    click.echo(
        f"{line.code:10} {AnswerStatus(line.status).label}  by {line.answered_by} {when} ({timing})"
    )
    due = "review due" if line.status == AnswerStatus.UNABLE else "next update due"
    for label, value in (
        ("expected", line.expected_on.isoformat() if line.expected_on else None),
        (due, line.update_due_on.isoformat() if line.update_due_on else None),
        ("reason", line.reason),
        ("mitigations", line.mitigations),
        ("note", line.note),
    ):
        if value:
            click.echo(f"{'':10} {label}: {value}")

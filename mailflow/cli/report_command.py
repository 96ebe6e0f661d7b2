"""`mailflow report`: the auditors' figures and table of organisations for
each alert, as a table, CSV or JSON, now or as at a past time; and
`--history ORG`, every answer one organisation gave.  The figures and rows
come from ``mailflow.reports``, the same functions every report uses."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailflow.alerts.issuing import get_alert
from mailflow.cli.context import Context, fail, parse_time, pass_context
from mailflow.core.errors import NotFound
from mailflow.core.mail.templates import format_time
from mailflow.core.models import Alert
from mailflow.reports import csv_export, history
from mailflow.reports.figures import STATUSES, AlertFigures, RowFilter, alert_figures, alert_rows
from mailflow.reports.wording import human_duration, percent

FORMATS = ("table", "csv", "json")


def _alerts(session: Session, references: Sequence[str], as_at: datetime) -> list[Alert]:
    """The alerts named, or every alert open at ``as_at`` that asks for
    answers (one that asks none has no figures), oldest first."""
    if references:
        try:
            return [get_alert(session, reference) for reference in references]
        except NotFound as exc:
            fail(str(exc))
    return list(
        session.scalars(
            select(Alert)
            .where(
                Alert.response_required.is_(True),
                Alert.issued_at <= as_at,
                or_(Alert.closed_at.is_(None), Alert.closed_at > as_at),
            )
            .order_by(Alert.issued_at, Alert.id)
        )
    )


def _status_filter(status: str | None) -> str | None:
    if status is None:
        return None
    normal = status.strip().lower().replace("-", "_").replace(" ", "_")
    if normal not in STATUSES:
        fail(f"--status: unknown status {status!r} (one of {', '.join(STATUSES)})")
    return normal


@click.command("report")
@click.argument("references", nargs=-1, metavar="[REF]...")
@click.option("--format", "format_", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--status", metavar="S", help=f"Only organisations with this status: {', '.join(STATUSES)}."
)
@click.option("--overdue", is_flag=True, help="Only organisations overdue (answer or update).")
@click.option("--as-at", "as_at", metavar="TIME", help="As things stood at TIME (ISO 8601).")
@click.option("--history", "history_of", metavar="ORG", help="Every answer ORG gave for REF.")
@pass_context
def report(
    ctx: Context,
    references: tuple[str, ...],
    format_: str,
    status: str | None,
    overdue: bool,
    as_at: str | None,
    history_of: str | None,
) -> None:
    """The figures and the organisations of each alert (no REF: every open
    alert): in scope, answered and within the deadline, each status, no
    answer, unreachable (every email bounced), overdue updates, and the
    median and 90th-percentile time to first answer."""
    zone = ctx.settings.zone
    when = parse_time(as_at, ctx.settings.timezone, option="--as-at") if as_at else None
    only = RowFilter(_status_filter(status), overdue)
    # A reader: the report may be piped to a pager for as long as someone
    # reads it, and must not hold SQLite's write lock meanwhile.
    with ctx.runtime.readers() as session:
        now = when or ctx.runtime.clock()
        if history_of is not None:
            if len(references) != 1:
                fail("--history: name exactly one alert")
            _print_history(session, references[0], history_of, format_, zone)
            return
        alerts = _alerts(session, references, now)
        if format_ == "csv":
            writer = csv_export.CsvWriter(sys.stdout)
            for alert in alerts:
                writer.write_rows(
                    alert.reference, alert_rows(session, alert.id, as_at=now, zone=zone, only=only)
                )
        elif format_ == "json":
            reports = [_alert_data(session, alert, now, zone, only) for alert in alerts]
            click.echo(json.dumps({"as_at": now.isoformat(), "alerts": reports}, indent=2))
        else:
            for alert in alerts:
                _print_alert(session, alert, now, zone, only)


def _json_value(value: object) -> object:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _alert_data(
    session: Session, alert: Alert, as_at: datetime, zone: ZoneInfo, only: RowFilter
) -> dict[str, Any]:
    figures = alert_figures(session, alert.id, as_at=as_at, zone=zone)
    rows = alert_rows(session, alert.id, as_at=as_at, zone=zone, only=only)
    return {
        "figures": {name: _json_value(value) for name, value in asdict(figures).items()},
        "rows": [
            {name: _json_value(value) for name, value in zip(csv_export.COLUMNS, row, strict=True)}
            for row in rows
        ],
    }


def figures_lines(f: AlertFigures, zone: ZoneInfo) -> Iterator[str]:
    yield f"{f.reference}  [{f.severity.upper()}]  {f.title}"
    yield f"as at        {format_time(f.as_at, zone)}"
    yield f"deadline     {format_time(f.deadline_at, zone)}"
    yield f"in scope     {f.in_scope}"
    yield f"answered     {f.answered} ({percent(f.answered, f.in_scope)})"
    yield (
        f"in time      {f.answered_within_deadline} "
        f"({percent(f.answered_within_deadline, f.in_scope)})"
    )
    yield (
        f"statuses     in progress {f.in_progress}, complete {f.complete}, "
        f"not applicable {f.not_applicable}, unable {f.unable}, no answer {f.no_answer}"
    )
    yield f"unreachable  {f.unreachable} (no answer, every email bounced)"
    yield f"overdue      {f.overdue_updates} update(s) or review(s)"
    yield (
        f"first answer median {human_duration(f.median_to_first_answer)}, "
        f"90th percentile {human_duration(f.p90_to_first_answer)}"
    )


def _print_alert(
    session: Session, alert: Alert, as_at: datetime, zone: ZoneInfo, only: RowFilter
) -> None:
    for line in figures_lines(alert_figures(session, alert.id, as_at=as_at, zone=zone), zone):
        click.echo(line)
    click.echo("")
    click.echo(f"{'code':10} {'status':15} {'answered by':32} {'answered at':18} next update")
    for row in alert_rows(session, alert.id, as_at=as_at, zone=zone, only=only):
        values = dict(zip(csv_export.COLUMNS, row, strict=True))
        status = values["status"] or ("unreachable" if values["bounced"] else "no answer")
        flags = " overdue" if values["overdue"] else ""
        answered_at = format_time(values["answered_at"], zone) if values["answered_at"] else ""
        due = values["next_update_on"].isoformat() if values["next_update_on"] else ""
        click.echo(
            f"{values['code']:10} {status:15} {values['answered_by'] or '':32} "
            f"{answered_at:18} {due}{flags}"
        )
    click.echo("")


def _print_history(
    session: Session, reference: str, code: str, format_: str, zone: ZoneInfo
) -> None:
    try:
        alert = get_alert(session, reference)
        rows = list(history.answer_history(session, alert.id, code))
    except NotFound as exc:
        fail(str(exc))
    named = [dict(zip(history.COLUMNS, row, strict=True)) for row in rows]
    if format_ == "json":
        data = [{k: _json_value(v) for k, v in answer.items()} for answer in named]
        click.echo(json.dumps(data, indent=2))
    elif format_ == "csv":
        csv_export.write_table(sys.stdout, history.COLUMNS, rows)
    else:
        for answer in named:
            click.echo(
                f"{format_time(answer['recorded_at'], zone)}  {answer['status']:15} "
                f"by {answer['answered_by']} ({answer['via']})"
            )
            for label in ("note", "reason", "mitigations", "expected_on", "next_update_on"):
                if answer[label]:
                    click.echo(f"    {label.replace('_', ' ')}: {_json_value(answer[label])}")

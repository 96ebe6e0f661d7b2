"""`mailflow doctor`: check that what the settings name is there and
answers, one line each; the checks are in mailflow.core.doctor."""

from __future__ import annotations

import sys

import click

from mailflow.cli.context import warn_about_unknown_variables
from mailflow.config import ConfigError, load_settings
from mailflow.core.doctor import FAIL, OK, TIMEOUT_SECONDS, Finding, run_checks


@click.command("doctor")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds each check may take.",
)
def doctor(timeout: float) -> None:
    """Check the settings, the database and its schema, the broker, the
    relay, the inbound server, the IMAP mailbox and the web app.

    Changes nothing and sends nothing.  One line a check: ok, warn, skip
    (not configured) or FAIL with what to do; exits 1 when any failed."""
    warn_about_unknown_variables()
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(Finding(FAIL, "settings", f"{exc}: nothing else was checked").line)
        sys.exit(1)
    click.echo(Finding(OK, "settings", "loaded").line)
    findings = run_checks(settings, timeout)
    for finding in findings:
        click.echo(finding.line)
    if any(finding.status == FAIL for finding in findings):
        sys.exit(1)

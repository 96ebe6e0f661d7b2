"""The top-level ``mailflow`` group, and every command joining it.

Imports run one way: this module imports the command modules, which
import the shared plumbing (``context``, ``failures``, ``running``);
nothing imports this module but the entry point, ``main``."""

from __future__ import annotations

import os

import click

from mailflow.cli.access_command import access
from mailflow.cli.alert_command import alert
from mailflow.cli.config_command import show_config
from mailflow.cli.context import Context, fail
from mailflow.cli.db_command import db
from mailflow.cli.doctor_command import doctor
from mailflow.cli.failures import ReportingGroup
from mailflow.cli.imap_command import imap
from mailflow.cli.inbound_command import inbound
from mailflow.cli.keys_command import keys
from mailflow.cli.mail_command import mail
from mailflow.cli.orgs_command import orgs
from mailflow.cli.report_command import report
from mailflow.cli.scheduler_command import scheduler
from mailflow.cli.serve_command import serve
from mailflow.cli.smtpd_command import smtpd
from mailflow.cli.users_command import users
from mailflow.cli.web_command import web
from mailflow.cli.worker_command import worker
from mailflow.config import ENV_NAMES, ConfigError
from mailflow.core.logs import configure_logging
from mailflow.settings_values import parse_log_format

LOG_FORMAT_VARIABLE = ENV_NAMES["log_format"]


@click.group(
    "mailflow", cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="mailflow", prog_name="mailflow", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log more detail.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """mailflow: issue cyber alerts and collect each organisation's
    remediation status by email.

    Settings come from MAILFLOW_* environment variables or
    config/mailflow.toml; see `mailflow config`."""
    # Read before the settings (which need a secret key even for a
    # command that only prints), so the very first line has its format;
    # a config file's value replaces it once the settings are read.
    try:
        log_format = parse_log_format(os.environ.get(LOG_FORMAT_VARIABLE, "text"))
    except ValueError as exc:
        fail(f"configuration: {ConfigError(LOG_FORMAT_VARIABLE, str(exc))}", code=2)
    # Our own progress at INFO; libraries (alembic, pika, dramatiq) only
    # when something is wrong, unless --verbose.
    configure_logging(log_format, verbose=verbose)
    context = Context()
    ctx.obj = context
    ctx.call_on_close(context.close)


# `mailflow --help` lists them by name, whatever the order here.
for command in (
    show_config,
    db,
    doctor,
    orgs,
    users,
    keys,
    access,
    alert,
    report,
    worker,
    serve,
    scheduler,
    smtpd,
    web,
    imap,
    inbound,
    mail,
):
    cli.add_command(command)

"""The last resort for errors no command foresaw: one clear line and a
non-zero exit instead of a traceback, which goes to the log (shown with
``--verbose``).  Known bad input is answered where it is found; this only
catches what slips through."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("mailflow")


def one_line(error: object) -> str:
    """An error's text on one line: database drivers write several."""
    return " ".join(str(error).split())


def report_usage_error(error: click.UsageError) -> NoReturn:
    """A bad option or argument in one line, pointing at the command's help
    (click's own report takes three)."""
    where = error.ctx.command_path if error.ctx else "mailflow"
    message = error.format_message().rstrip(".")
    click.echo(f"mailflow: {message} (see `{where} --help`)", err=True)
    sys.exit(error.exit_code)


def database_problem(error: DBAPIError) -> str:
    """What is wrong with the database, in one line: the driver's own words,
    without SQLAlchemy's statement and background link."""
    if isinstance(error, OperationalError):
        return f"cannot reach the database: {one_line(error.orig)}"
    return f"cannot use the database: {one_line(error.orig)}"


class ReportingGroup(click.Group):
    """The top-level ``mailflow`` group."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The group's own options (mailflow --bogus) are read here.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            report_usage_error(error)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            # A subcommand's options and arguments are read here.
            report_usage_error(error)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            # click reports these itself (a closed pipe, as from `| head`,
            # quietly).
            raise
        except DBAPIError as exc:
            # The database went away, or was never there, mid-command.
            log.debug("database error", exc_info=True)
            click.echo(f"mailflow: {database_problem(exc)}", err=True)
            sys.exit(2)
        except Exception as exc:
            log.debug("unexpected error", exc_info=True)
            click.echo(
                f"mailflow: unexpected error: {type(exc).__name__}: {one_line(exc)} "
                "(run with --verbose to see where)",
                err=True,
            )
            sys.exit(1)

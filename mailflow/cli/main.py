"""The ``mailflow`` command line: a thin edge over the domain."""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import alembic.util
import click
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, selectinload

from mailflow.cli.failures import ReportingGroup, database_problem, one_line
from mailflow.config import ConfigError, Settings, load_settings, unknown_variables
from mailflow.db import migrate
from mailflow.domain.alerts import get_alert, issue_alert
from mailflow.domain.deliveries import count_by_state
from mailflow.domain.errors import InvalidInput, NotFound
from mailflow.domain.models import AlertAudience, Delivery, Organisation, User
from mailflow.domain.organisations import import_organisations
from mailflow.domain.users import ROLE_NAMES, add_user, list_users, remove_user
from mailflow.intake.alert_files import read_alert_file
from mailflow.intake.organisation_files import read_organisation_file
from mailflow.mail.templates import counted, format_time
from mailflow.workers.queue import JobQueue, QueueWorker
from mailflow.workers.runtime import Runtime

log = logging.getLogger("mailflow")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"mailflow: {message}", err=True)
    sys.exit(code)


def actor_name() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Context:
    """Loads settings and opens the database on first use, so ``--help``
    works without either."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            # A misspelt variable would otherwise be ignored without a word,
            # leaving the default in force.
            for name, closest in unknown_variables(os.environ):
                hint = f" (did you mean {closest}?)" if closest else ""
                click.echo(
                    f"mailflow: warning: {name} is not a mailflow setting and is ignored{hint}",
                    err=True,
                )
            try:
                self._settings = load_settings()
            except ConfigError as exc:
                fail(f"configuration: {exc}", code=2)
        return self._settings

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings)
        return self._runtime

    def require_schema(self) -> None:
        try:
            up_to_date = migrate.is_up_to_date(self.runtime.engine)
        except DBAPIError as exc:
            fail(database_problem(exc), code=2)
        if not up_to_date:
            fail("the database schema is not up to date: run `mailflow db upgrade`", code=2)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        self.require_schema()
        with self.runtime.sessions.begin() as session:
            yield session

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


pass_context = click.make_pass_decorator(Context)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the domain's refusals into one clear line and a non-zero exit;
    the transaction around the command has rolled back by then."""
    try:
        yield
    except InvalidInput as exc:
        fail(f"{exc.where}: {exc.problem} (nothing was written)")
    except NotFound as exc:
        fail(f"{exc} (nothing was written)")


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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Our own progress at INFO; libraries (alembic, pika, dramatiq) only
    # when something is wrong, unless --verbose.
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    context = Context()
    ctx.obj = context
    ctx.call_on_close(context.close)


@cli.command("config")
@pass_context
def show_config(ctx: Context) -> None:
    """Show the settings in force (secrets hidden).

    One NAME=value a line, as it would be set in the environment; the
    secret key says where it came from.  Relative paths are relative to the
    current folder."""
    for name, value in ctx.settings.describe().items():
        click.echo(f"{name}={value}")


# ---------------------------------------------------------------- database


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Create the schema, or bring it up to the newest version."""
    try:
        migrate.upgrade(ctx.runtime.engine)
    except DBAPIError as exc:
        fail(database_problem(exc), code=2)
    except alembic.util.CommandError as exc:
        # A revision this mailflow does not know: a newer one migrated it.
        fail(f"cannot upgrade the database: {one_line(exc)}", code=2)
    click.echo(f"database at revision {migrate.current_revision(ctx.runtime.engine)}")


# ----------------------------------------------------------- organisations


@cli.group()
def orgs() -> None:
    """Organisations the service covers."""


@orgs.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--type", "org_type", help="Organisation type for every row (e.g. trust, icb).")
@pass_context
def orgs_import(ctx: Context, file: Path, org_type: str | None) -> None:
    """Import organisations from FILE.

    FILE is a CSV with the header code,name,type[,parent], or an NHS ODS
    extract as published (etr.csv for trusts, eccg.csv for ICBs/CCGs).
    Known organisations are updated (names, types, closures).  A bad row
    stops the import, naming its line, and nothing is imported."""
    with reported_errors():
        records = read_organisation_file(file, org_type)
        with ctx.transaction() as session:
            summary = import_organisations(
                session, records, now=ctx.runtime.clock(), actor=actor_name(), source=file.name
            )
    click.echo(
        f"{len(records)} organisations read: {summary.created} new, {summary.updated} updated, "
        f"{summary.closed} closed, {summary.unchanged} unchanged"
    )


@orgs.command("list")
@click.option("--all", "include_closed", is_flag=True, help="Include closed organisations.")
@pass_context
def orgs_list(ctx: Context, include_closed: bool) -> None:
    """List organisations."""
    with ctx.transaction() as session:
        query = select(Organisation).order_by(Organisation.code)
        if not include_closed:
            query = query.where(Organisation.closed_on.is_(None))
        for org in session.scalars(query):
            closed = f"  closed {org.closed_on}" if org.closed_on else ""
            click.echo(f"{org.code:10} {org.type:12} {org.name}{closed}")


# ------------------------------------------------------------------- users


@cli.group()
def users() -> None:
    """People and their roles."""


@users.command("add")
@click.argument("email")
@click.option("--name", help="Full name (needed for a new user).")
@click.option("--org", "org_code", help="Organisation code the role is held for.")
@click.option(
    "--role",
    type=click.Choice(ROLE_NAMES),
    required=True,
    help="administrator, responder or alert-only for an organisation; auditor is national.",
)
@pass_context
def users_add(ctx: Context, email: str, name: str | None, org_code: str | None, role: str) -> None:
    """Add a user, or give an existing user a role at another organisation."""
    with reported_errors(), ctx.transaction() as session:
        added = add_user(
            session,
            email=email,
            name=name,
            role=role,
            org_code=org_code,
            now=ctx.runtime.clock(),
            actor=actor_name(),
        )
        where = f" at {org_code.upper()}" if org_code else ""
        verb = "added" if added.created else "updated"
        if added.created or added.reactivated:
            # In the same transaction: a new user always gets their link (as
            # does one added again: removal cleared their authenticator).
            from mailflow.mail.welcome import queue_welcome_email

            link = queue_welcome_email(
                session, ctx.settings, user=added.user, now=ctx.runtime.clock()
            )
        click.echo(f"{verb} {added.user.email} ({added.user.name}): {role}{where}")
        if added.created or added.reactivated:
            what = "a link to set up an authenticator app" if link else "no set-up needed"
            click.echo(f"welcome email queued: {what}", err=True)


@users.command("reset-mfa")
@click.argument("email")
@pass_context
def users_reset_mfa(ctx: Context, email: str) -> None:
    """Remove a user's authenticator app and recovery codes (a lost phone)
    and email them a new link to set one up."""
    from mailflow.domain.mfa import reset_mfa
    from mailflow.domain.users import normalise_email
    from mailflow.mail.welcome import queue_welcome_email

    with reported_errors(), ctx.transaction() as session:
        address = normalise_email(email)
        user = session.scalar(select(User).where(User.email == address))
        if user is None:
            raise NotFound(f"no user {address}")
        now = ctx.runtime.clock()
        reset_mfa(session, user_id=user.id, now=now, actor=actor_name())
        link = queue_welcome_email(session, ctx.settings, user=user, now=now, reset=True)
    queued = "a new set-up link is queued" if link else "they need none (alert-only)"
    click.echo(f"second factor reset for {address}; {queued}")


@users.command("list")
@click.option("--org", "org_code", help="Only users of this organisation.")
@pass_context
def users_list(ctx: Context, org_code: str | None) -> None:
    """List active users and their roles, and whether their welcome email
    bounced (the address may be mistyped)."""
    from mailflow.domain.outgoing import latest_bounces
    from mailflow.mail.welcome import WELCOME_KIND

    with reported_errors(), ctx.transaction() as session:
        people = list_users(session, org_code=org_code)
        bounces = latest_bounces(session, kind=WELCOME_KIND, user_ids=[u.id for u in people])
        for user in people:
            roles = [f"{m.role}@{m.organisation.code}" for m in user.memberships]
            if user.national_role:
                roles.append(str(user.national_role))
            line = f"{user.email:40} {user.name:30} {', '.join(sorted(roles))}"
            if bounce := bounces.get(user.id):
                line += f"  welcome: bounced {bounce.at:%Y-%m-%d} ({bounce.report})"
            click.echo(line)


@users.command("remove")
@click.argument("email")
@click.option("--org", "org_code", help="Remove only the role at this organisation.")
@pass_context
def users_remove(ctx: Context, email: str, org_code: str | None) -> None:
    """Remove a user's role at one organisation, or (without --org) all
    their access.  Their history is kept."""
    with reported_errors(), ctx.transaction() as session:
        user = remove_user(
            session, email=email, org_code=org_code, now=ctx.runtime.clock(), actor=actor_name()
        )
        click.echo(f"removed {user.email}" + (f" from {org_code.upper()}" if org_code else ""))


# ------------------------------------------------------------------ alerts


@cli.group()
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
    if ctx.settings.broker_url:
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
    else:
        click.echo("`mailflow serve` (or `mailflow worker`) sends them.", err=True)


@alert.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def alert_show(ctx: Context, reference: str, as_json: bool) -> None:
    """Show an alert and the state of each of its emails:
    queued, sending, sent, deferred, failed or bounced."""
    with reported_errors(), ctx.transaction() as session:
        found = get_alert(session, reference)
        audience = list(
            session.scalars(
                select(Organisation.code)
                .join(AlertAudience)
                .where(AlertAudience.alert_id == found.id)
                .order_by(Organisation.code)
            )
        )
        deliveries = list(
            session.scalars(
                select(Delivery)
                .where(Delivery.alert_id == found.id)
                .options(selectinload(Delivery.user).selectinload(User.memberships))
                .order_by(Delivery.id)
            )
        )
        audience_ids = {
            org.id: org.code
            for org in session.scalars(select(Organisation).where(Organisation.code.in_(audience)))
        }
        counts = count_by_state(session, alert_id=found.id)
        data: dict[str, Any] = {
            "reference": found.reference,
            "title": found.title,
            "severity": str(found.severity),
            "response_required": found.response_required,
            "issued_at": found.issued_at.isoformat(),
            "issued_by": found.issued_by,
            "deadline_at": found.deadline_at.isoformat(),
            "summary": found.summary,
            "affected": found.affected,
            "cves": found.cves,
            "remediation": found.remediation,
            "references": found.references,
            "audience": audience,
            "delivery_counts": dict(sorted(counts.items())),
            "deliveries": [
                {
                    "recipient": d.user.email,
                    "organisations": sorted(
                        audience_ids[m.organisation_id]
                        for m in d.user.memberships
                        if m.organisation_id in audience_ids
                    ),
                    "state": str(d.state),
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "message_id": d.message_id,
                    "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                }
                for d in deliveries
            ],
        }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    zone = ctx.settings.zone
    click.echo(f"{found.reference}  [{str(found.severity).upper()}]  {found.title}")
    click.echo(f"issued    {format_time(found.issued_at, zone)} by {found.issued_by}")
    click.echo(
        f"deadline  {format_time(found.deadline_at, zone)}"
        + ("" if found.response_required else " (response not required)")
    )
    click.echo(f"audience  {len(audience)} organisations: {', '.join(audience)}")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    click.echo(f"emails    {summary}")
    click.echo("")
    click.echo(f"{'recipient':36} {'organisations':16} {'state':9} {'tries':>5}  last error")
    for row in data["deliveries"]:
        click.echo(
            f"{row['recipient']:36} {','.join(row['organisations']):16} {row['state']:9} "
            f"{row['attempts']:>5}  {row['last_error'] or ''}"
        )


@alert.command("status")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def alert_status(ctx: Context, reference: str, as_json: bool) -> None:
    """Show each organisation in the alert's audience with its current
    status (or "no answer"), its further information, who answered and
    when, and whether it was within the deadline."""
    from mailflow.domain.answers import alert_status_lines
    from mailflow.domain.statuses import AnswerStatus

    with reported_errors(), ctx.transaction() as session:
        found = get_alert(session, reference)
        lines = alert_status_lines(session, alert_id=found.id)
    rows = [
        {
            "organisation": line.code,
            "name": line.name,
            "status": line.status,
            "note": line.note,
            "reason": line.reason,
            "mitigations": line.mitigations,
            "expected_on": line.expected_on.isoformat() if line.expected_on else None,
            "answered_by": line.answered_by,
            "answered_at": line.answered_at.isoformat() if line.answered_at else None,
            "first_answered_at": (
                line.first_answered_at.isoformat() if line.first_answered_at else None
            ),
            "within_deadline": line.within_deadline,
        }
        for line in lines
    ]
    if as_json:
        data = {
            "reference": found.reference,
            "title": found.title,
            "deadline_at": found.deadline_at.isoformat(),
            "organisations": rows,
        }
        click.echo(json.dumps(data, indent=2))
        return
    zone = ctx.settings.zone
    answered = sum(1 for line in lines if line.status)
    click.echo(f"{found.reference}  {found.title}")
    click.echo(f"deadline  {format_time(found.deadline_at, zone)}")
    click.echo(f"answered  {answered} of {len(lines)} organisations")
    click.echo("")
    for line in lines:
        if line.status is None:
            click.echo(f"{line.code:10} no answer")
            continue
        timing = "within the deadline" if line.within_deadline else "after the deadline"
        when = format_time(line.answered_at, zone) if line.answered_at else ""
        click.echo(
            f"{line.code:10} {AnswerStatus(line.status).label}  "
            f"by {line.answered_by} {when} ({timing})"
        )
        for label, value in (
            ("expected", line.expected_on.isoformat() if line.expected_on else None),
            ("reason", line.reason),
            ("mitigations", line.mitigations),
            ("note", line.note),
        ):
            if value:
                click.echo(f"{'':10} {label}: {value}")


# --------------------------------------------------------------- processes


def run_until_stopped(start: Callable[[], None], stop: Callable[[], None]) -> None:
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %s: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start()
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        stop()


@cli.command()
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Worker threads."
)
@pass_context
def worker(ctx: Context, threads: int) -> None:
    """Run the queue worker alone: sends alert emails (and, later, every
    other job).  Uses MAILFLOW_BROKER_URL, or an in-process queue."""
    ctx.require_schema()
    queue_worker = QueueWorker(ctx.runtime, threads=threads)
    where = ctx.settings.smtp_relay.redacted() if ctx.settings.smtp_relay else ctx.settings.maildir
    log.info("worker started: mail goes to %s", where)
    run_until_stopped(queue_worker.start, queue_worker.stop)


@cli.command()
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Worker threads."
)
@click.option("--no-smtpd", is_flag=True, help="Do not run the inbound SMTP server.")
@click.option("--no-web", is_flag=True, help="Do not run the web server.")
@pass_context
def serve(ctx: Context, threads: int, no_smtpd: bool, no_web: bool) -> None:
    """Run every part of mailflow in one process, on the embedded defaults
    unless configured otherwise: the queue worker, the inbound SMTP server
    (MAILFLOW_INBOUND_ADDR), the web pages (MAILFLOW_WEB_ADDR) and, when
    MAILFLOW_IMAP_URL is set, the IMAP poller."""
    ctx.require_schema()
    settings = ctx.settings
    runtime = ctx.runtime
    starts: list[Callable[[], None]] = []
    stops: list[Callable[[], None]] = []

    queue_worker = QueueWorker(runtime, threads=threads)
    starts.append(queue_worker.start)
    stops.append(queue_worker.stop)
    if not no_smtpd:
        from mailflow.edges.smtpd import InboundServer

        host, port = settings.inbound_addr
        server = InboundServer(runtime, host, port)
        starts.append(server.start)
        stops.append(server.stop)
    if settings.imap_url:
        from mailflow.edges.imap import ImapPoller

        stop_polling = threading.Event()
        poller_thread = threading.Thread(
            target=ImapPoller(runtime).run, args=(stop_polling,), name="imap", daemon=True
        )

        def stop_poller() -> None:
            stop_polling.set()
            poller_thread.join(timeout=10)

        starts.append(poller_thread.start)
        stops.append(stop_poller)
    if not no_web:
        from mailflow.cli.web_command import listening_socket, web_server

        try:
            web_socket = listening_socket(*settings.web_addr)
        except OSError as exc:
            fail(f"cannot listen on {_show_addr(settings.web_addr)}: {exc.strerror}", code=2)
        # In a thread uvicorn leaves the signals to run_until_stopped.
        web = web_server(runtime, *settings.web_addr)
        web_thread = threading.Thread(
            target=web.run, kwargs={"sockets": [web_socket]}, name="web", daemon=True
        )

        def stop_web() -> None:
            web.should_exit = True
            web_thread.join(timeout=10)

        starts.append(web_thread.start)
        stops.append(stop_web)

    def start_all() -> None:
        started: list[Callable[[], None]] = []
        try:
            for start, stop in zip(starts, stops, strict=True):
                start()
                started.append(stop)
        except OSError as exc:
            # The inbound server's address is in use or not ours.
            for stop in reversed(started):
                stop()
            fail(f"cannot start: {exc.strerror or exc}", code=2)
        where = settings.smtp_relay.redacted() if settings.smtp_relay else settings.maildir
        log.info("mailflow serving: mail goes to %s", where)
        if not no_smtpd:
            log.info("inbound SMTP on %s:%s", *settings.inbound_addr)
        if not no_web:
            log.info("web pages on http://%s:%s", *settings.web_addr)

    def stop_all() -> None:
        for stop in reversed(stops):
            stop()

    run_until_stopped(start_all, stop_all)


def _show_addr(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _register_edge_commands() -> None:
    # Each edge's command lives beside its own module's concerns; they join
    # the one `mailflow` group here.
    from mailflow.cli import (
        imap_command,
        inbound_command,
        mail_command,
        smtpd_command,
        web_command,
    )

    smtpd_command.register(cli)
    web_command.register(cli)
    imap_command.register(cli)
    inbound_command.register(cli)
    mail_command.register(cli)


_register_edge_commands()


def main() -> None:
    cli(prog_name="mailflow")

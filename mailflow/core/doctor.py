"""`mailflow doctor`'s checks: is each thing this deployment's settings
name there, and does it answer?

Each check is a small function of the settings that returns one
:class:`Finding`; :func:`run_checks` runs each in a thread of its own and
gives up on it after a few seconds, so a server that accepts a connection
and then says nothing cannot hang the doctor.  No check changes anything:
the relay is greeted and left (EHLO, QUIT: nothing is sent), the IMAP
mailbox is logged in to and out of, the web app is asked for a page with
GET, the inbound server is greeted and left.  Details never carry a secret:
URLs are shown with their passwords hidden, as `mailflow config` shows
them.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from mailflow.config import Settings
from mailflow.core import health
from mailflow.db import migrate
from mailflow.db.engine import make_engine
from mailflow.settings_values import redact_url

TIMEOUT_SECONDS = 5.0
OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"


@dataclass(frozen=True)
class Finding:
    status: str
    name: str
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status:<4} {self.name}  {self.detail}"


Check = Callable[[Settings, float], Finding]


def _problem(exc: BaseException) -> str:
    """An error in one line, without the driver's several."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    # smtplib reports a timeout as the server having disconnected.
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return "no answer in time"
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc
    words = " ".join(str(exc).split())
    return words or type(exc).__name__


# ------------------------------------------------------------------ database


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file the URL names, when it does not exist: opening it
    would create an empty one, which the doctor must not do."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database or "")
    return None if path.exists() else path


def _engine(settings: Settings, timeout: float) -> Engine:
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        return make_engine(settings.database_url, immediate=False)
    return make_engine(
        settings.database_url, connect_args={"connect_timeout": max(1, int(timeout))}
    )


def check_database(settings: Settings, timeout: float) -> list[Finding]:
    """Connects; then the schema's revision, and whether commits are
    durable (SQLite's synchronous, PostgreSQL's synchronous_commit)."""
    shown = redact_url(settings.database_url)
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        fix = "run `mailflow db upgrade` to create it, or set MAILFLOW_DATABASE_URL"
        return [Finding(FAIL, "database", f"{shown}: no file at {missing}: {fix}")]
    engine = _engine(settings, timeout)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        hidden = " (password hidden)" if shown != settings.database_url else ""
        found = [Finding(OK, "database", f"{shown}{hidden}")]
        found.append(_schema(engine))
        found.append(commit_durability(engine))
        return found
    except DBAPIError as exc:
        fix = "start it, or set MAILFLOW_DATABASE_URL"
        return [Finding(FAIL, "database", f"cannot connect to {shown}: {_problem(exc)}: {fix}")]
    finally:
        engine.dispose()


def _schema(engine: Engine) -> Finding:
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current == head:
        return Finding(OK, "schema", f"at {current}, the newest")
    if current is None:
        return Finding(FAIL, "schema", "no schema yet: run `mailflow db upgrade`")
    if current not in {rev.revision for rev in migrate.revisions()}:
        return Finding(
            FAIL, "schema", f"at {current}, which a newer mailflow wrote: run that version"
        )
    return Finding(FAIL, "schema", f"at {current}, not {head}: run `mailflow db upgrade`")


def commit_durability(engine: Engine) -> Finding:
    """Whether a commit has reached the disk when it returns: the inbound
    server answers 250 on the strength of it."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            level = connection.exec_driver_sql("PRAGMA synchronous").scalar()
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            state = OK if level == 2 else WARN  # 2 is FULL
            return Finding(state, "durability", f"sqlite synchronous={level} journal_mode={mode}")
        setting = connection.exec_driver_sql("SHOW synchronous_commit").scalar()
    if setting == "off":
        return Finding(
            WARN,
            "durability",
            "synchronous_commit=off: a crash of the database server loses mail already "
            "answered 250; set it to on (the default)",
        )
    return Finding(OK, "durability", f"postgresql synchronous_commit={setting}")


# -------------------------------------------------------------------- broker


def check_broker(settings: Settings, timeout: float) -> Finding:
    url = settings.broker_url
    if not url:
        return Finding(SKIP, "broker", "none configured: jobs run in-process (one machine)")
    shown = redact_url(url)
    try:
        health.check_broker(url, timeout)
    except Exception as exc:  # each client raises its own kinds
        return Finding(FAIL, "broker", f"cannot connect to {shown}: {_problem(exc)}")
    return Finding(OK, "broker", shown)


# ---------------------------------------------------------------------- mail


def check_relay(settings: Settings, timeout: float) -> Finding:
    """EHLO (and STARTTLS and AUTH when configured), then QUIT."""
    relay = settings.smtp_relay
    if relay is None:
        return Finding(
            SKIP, "relay", f"none configured: emails go to the maildir {settings.maildir}"
        )
    where = f"{relay.host}:{relay.port}"
    fix = "start the relay or set MAILFLOW_SMTP_RELAY"
    smtp_class = smtplib.SMTP_SSL if relay.use_tls else smtplib.SMTP
    try:
        with smtp_class(relay.host, relay.port, timeout=timeout) as client:
            client.ehlo()
            if relay.start_tls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if relay.username and relay.password:
                client.login(relay.username, relay.password)
    except smtplib.SMTPAuthenticationError:
        return Finding(FAIL, "relay", f"{where} refused the username and password: check them")
    except (OSError, smtplib.SMTPException) as exc:
        return Finding(FAIL, "relay", f"{_problem(exc)} at {where}: {fix}")
    return Finding(OK, "relay", f"{relay.redacted()} answered EHLO")


def check_inbound(settings: Settings, timeout: float) -> Finding:
    """Something answering SMTP or LMTP with a 220 greeting at the inbound
    address: the doctor runs beside the server, so it greets it and leaves
    rather than trying to bind its port."""
    host, port = settings.inbound_addr
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            banner = sock.makefile("rb").readline(512).decode("ascii", "replace").strip()
            sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        if settings.imap_url is not None:
            return Finding(SKIP, "inbound", f"nothing at {where}; replies come by IMAP")
        fix = "start `mailflow smtpd` (or `mailflow serve`), or set MAILFLOW_INBOUND_ADDR"
        return Finding(FAIL, "inbound", f"{_problem(exc)} at {where}: {fix}")
    if not banner.startswith("220"):
        return Finding(FAIL, "inbound", f"{where} did not greet as an SMTP server: {banner[:80]}")
    return Finding(OK, "inbound", f"{where} answered 220")


def check_imap(settings: Settings, timeout: float) -> Finding:
    target = settings.imap_url
    if target is None:
        return Finding(SKIP, "imap", "not configured")
    try:
        client = IMAPClient(target.host, port=target.port, ssl=target.use_tls, timeout=timeout)
        try:
            client.login(target.username, target.password)
        finally:
            client.logout()
    except Exception as exc:  # imaplib's share no base but Exception
        return Finding(
            FAIL, "imap", f"{target.redacted()}: {_problem(exc)}: check MAILFLOW_IMAP_URL"
        )
    return Finding(OK, "imap", f"{target.redacted()} logged in and out")


# ----------------------------------------------------------------------- web


def check_web(settings: Settings, timeout: float) -> Finding:
    """GET /healthz, or / when there is none: any answer below 500 means
    the app is there."""
    base = settings.base_url.rstrip("/")
    shown = redact_url(base)
    try:
        status = _get_status(f"{base}/healthz", timeout)
        if status == 404:
            status = _get_status(f"{base}/", timeout)
    except (OSError, ValueError) as exc:
        fix = "start `mailflow web` (or `mailflow serve`), or set MAILFLOW_BASE_URL"
        return Finding(FAIL, "web", f"{shown} unreachable: {_problem(_reason(exc))}: {fix}")
    if status >= 500:
        return Finding(FAIL, "web", f"{shown} answered {status}: see the web app's log")
    return Finding(OK, "web", f"{shown} answered {status}")


def _reason(exc: BaseException) -> BaseException:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, BaseException) else exc


def _get_status(url: str, timeout: float) -> int:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, method="GET")  # noqa: S310 (checked just above)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -------------------------------------------------------------------- runner


def all_checks() -> Sequence[Callable[[Settings, float], Finding | list[Finding]]]:
    return (check_database, check_broker, check_relay, check_inbound, check_imap, check_web)


def run_checks(settings: Settings, timeout: float = TIMEOUT_SECONDS) -> list[Finding]:
    """Every check, each in a thread of its own and given ``timeout``
    seconds (and a second more for the thread) before it is reported as
    hanging; the threads run at once, so the whole takes one timeout at
    most."""
    runs = [_Run(check, settings, timeout) for check in all_checks()]
    for run in runs:
        run.thread.join(timeout + 1)
    findings: list[Finding] = []
    for run in runs:
        findings.extend(run.findings())
    return findings


class _Run:
    def __init__(self, check: Callable[..., Any], settings: Settings, timeout: float) -> None:
        self.name = check.__name__.removeprefix("check_")
        self.timeout = timeout
        self.result: Finding | list[Finding] | None = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = check(settings, timeout)
            except Exception as exc:  # reported as the check's failure
                self.error = exc

        self.thread = threading.Thread(target=target, name=f"doctor-{self.name}", daemon=True)
        self.thread.start()

    def findings(self) -> list[Finding]:
        if self.error is not None:
            return [Finding(FAIL, self.name, _problem(self.error))]
        if self.result is None:
            return [Finding(FAIL, self.name, f"no answer within {self.timeout:g} s")]
        return self.result if isinstance(self.result, list) else [self.result]

"""Settings, read in one place.

Precedence, lowest first: the defaults below, then a TOML file
(``MAILFLOW_CONFIG``, else ``config/mailflow.toml`` if it exists), then
``MAILFLOW_*`` environment variables.  Every problem is reported as a
:class:`ConfigError` that names the setting, so the command line can stop
with a message a person can act on.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from email.headerregistry import Address
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailflow.schedule_values import (
    OFFICE_HOURS,
    WEEKDAYS,
    WorkingDays,
    WorkingHours,
)
from mailflow.settings_keys import (
    DEFAULT_SECRET_KEY_FILE,
    KEY_SETTINGS,
    KEY_VARIABLES,
    choose_keys,
    refuse_both,
)
from mailflow.settings_values import (
    MIN_SECRET_KEY_LENGTH,
    PARSERS,
    ConfigError,
    ImapConfig,
    RelayConfig,
    as_setting_text,
    parse_host_port,
    parse_imap_url,
    parse_relay,
    redact_url,
)

# What the rest of mailflow imports from here, wherever it is defined.
__all__ = [
    "MIN_SECRET_KEY_LENGTH",
    "ConfigError",
    "ImapConfig",
    "RelayConfig",
    "Settings",
    "load_settings",
    "parse_host_port",
    "parse_imap_url",
    "parse_relay",
    "unknown_variables",
]

DEFAULT_CONFIG_FILE = Path("config/mailflow.toml")
# MAILFLOW_* variables that are not settings: the config file's name, and
# the test suite's own (MAILFLOW_TEST_POSTGRES_URL ...).
OTHER_VARIABLES = frozenset({"MAILFLOW_CONFIG", "MAILFLOW_PARENT_PID"})
TEST_VARIABLE_PREFIX = "MAILFLOW_TEST_"


@dataclass(frozen=True)
class Settings:
    database_url: str
    # The newest key: it signs new links and encrypts TOTP secrets.
    secret_key: str = field(repr=False)
    # The file the keys are read from when they are not set directly.
    secret_key_file: Path = DEFAULT_SECRET_KEY_FILE
    # Where the keys came from, for `mailflow config`: a variable, the
    # config file or the key file ("given" when passed in by a caller).
    key_origin: str = "given"
    # Every key, newest first (``secret_key`` among them): links signed and
    # secrets encrypted under any of them still work (see settings_keys).
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    broker_url: str | None = None
    smtp_relay: RelayConfig | None = None
    smtp_connections: int = 4
    smtp_timeout_seconds: float = 60.0
    maildir: Path = Path("var/maildir")
    mail_domain: str = "mailflow.localhost"
    from_address: str = ""
    base_url: str = "http://127.0.0.1:8000"
    service_name: str = "Cyber alerts"
    timezone: str = "Europe/London"
    answer_link_days: int = 30
    send_retry_base_seconds: float = 60.0
    send_max_attempts: int = 8
    # How long a sender holds the emails it has claimed.  It renews the hold
    # every quarter of this while it lives, so this is how soon another
    # worker takes over the emails of one that died (at least 5 s).
    send_lease_seconds: float = 20.0
    queue_name: str = "mailflow"
    inbound_addr: tuple[str, int] = ("127.0.0.1", 8025)
    inbound_max_bytes: int = 10 * 1024 * 1024
    # The longest one inbound message may take to read; one that takes
    # longer is marked failed, so it cannot hold up the others.
    inbound_read_seconds: float = 10.0
    # Addresses at the mail domain, besides reply+KEY and bounce+KEY, that
    # the inbound server accepts (local parts, e.g. "alerts", "postmaster").
    service_addresses: tuple[str, ...] = ("alerts", "postmaster", "access", "people")
    # SMTP sessions open at once, in all and from one client address.  Each
    # holds a file descriptor (and, in DATA, up to inbound_max_bytes of
    # memory), so the total stays far below the usual soft limit of 1,024
    # descriptors that the web edge, the database pool and the relay pool
    # share; 20 a client leaves room for a large provider's parallel
    # deliveries while no one address can take more than a tenth.
    inbound_max_sessions: int = 200
    inbound_max_sessions_per_client: int = 20
    # How long a session may wait for the client's next command.  MTAs send
    # their next command at once; aiosmtpd's 300 s let idle connections pile
    # up five times longer (Postfix drops to 10 s under stress).
    inbound_idle_seconds: float = 60.0
    # Recipients in one transaction: a reply goes to one reply address, an
    # LMTP delivery rarely to more than a few; past it, 452 4.5.3.
    inbound_max_recipients: int = 50
    # Messages processing ignored (unknown sender, automatic mail, junk to
    # the service addresses) are deleted this many days after arriving.
    inbound_retention_days: int = 30
    imap_url: ImapConfig | None = None
    # After a message is stored: "seen" sets \Seen, "move:FOLDER" moves it,
    # "delete" expunges it.
    imap_after: str = "seen"
    imap_poll_seconds: float = 30.0
    # The authserv-id our own MTA writes in Authentication-Results; only
    # those results are trusted.  Unset: Authentication-Results are ignored.
    authserv_id: str | None = None
    confirm_link_hours: int = 24
    error_replies_per_hour: int = 5
    # "Confirm your answer" emails to one person an hour: each carries a
    # live link, so a flood of replies must not become a flood of links.
    confirm_emails_per_hour: int = 10
    web_addr: tuple[str, int] = ("127.0.0.1", 8000)
    # Where an edge (smtpd, worker, imap, scheduler, web, serve) serves /healthz,
    # /readyz and /metrics for Prometheus (each command's --metrics-listen
    # overrides it).  Unset: nowhere but the web edge's own /healthz and
    # /readyz; metrics stay off the public web port, since they describe
    # the service to whoever asks.
    metrics_addr: tuple[str, int] | None = None
    # Whom people write to when a link fails or an email puzzles them,
    # shown on every error page and in every email footer.  Unset: the
    # address emails come from.
    help_email: str = ""
    # Where a request for an organisation with no active administrator
    # goes, to be decided with `mailflow access approve|deny`.  Unset: the
    # help address.
    service_desk: str = ""
    # A confirmed access request not decided this many days after it was
    # sent expires (its requester is told); one reminder goes to the
    # administrators after access_reminder_days.
    access_request_days: int = 7
    access_reminder_days: int = 3
    # Every this many days each administrator is asked whether the people
    # who answer for their organisation are still right.
    access_review_days: int = 90
    # Chasing (mailflow/deadlines/): reminders this many hours before the
    # deadline to organisations that have not answered, by severity.
    reminder_hours_critical: tuple[int, ...] = (24, 4)
    reminder_hours_high: tuple[int, ...] = (24, 4)
    # An in-progress answer's next update is due this many days after it
    # (unless it gives a date), an unable answer's review after review days.
    update_days: int = 3
    unable_review_days: int = 14
    # Reminders and update chasers go out only in working hours on working
    # days (MAILFLOW_TIMEZONE); deadlines run on the clock.
    working_hours: WorkingHours = OFFICE_HOURS
    working_days: WorkingDays = WEEKDAYS
    # When the auditors hear again about organisations still overdue.
    follow_up_schedule: str = "0 8 * * mon-fri"
    # When auditors are sent their digest (mailflow/reports/), local time:
    # those on the daily schedule, and those on the weekly one.
    digest_daily: str = "0 8 * * mon-fri"
    digest_weekly: str = "0 8 * * mon"
    # How often the scheduler looks for what has fallen due.
    scheduler_seconds: float = 60.0
    # How each process writes its log: readable "text", or "json" lines.
    log_format: str = "text"
    # How often a worker fanning out an alert logs how far it has got.
    progress_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.secret_keys:
            object.__setattr__(self, "secret_keys", (self.secret_key,))
        if self.secret_keys[0] != self.secret_key:
            raise ValueError("secret_key must be the first (newest) of secret_keys")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # Parsed once: every email sent asks for it (about 0.24 ms a parse,
    # 1.2 s of a 5,000-person import).  A frozen dataclass keeps a cached
    # property in the instance's own dictionary, so it cannot go stale.
    @cached_property
    def from_header(self) -> Address:
        name, addr = parseaddr(self.from_address)
        username, _, domain = addr.partition("@")
        return Address(display_name=name, username=username, domain=domain)

    def describe(self) -> dict[str, str]:
        """Every setting as text, written as it would be set, with secrets
        hidden, for ``mailflow config``."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.name not in ENV_NAMES:
                continue
            value = getattr(self, f.name)
            if f.name == "secret_key":
                text = f"(hidden; from {self.key_origin})" if value else "(missing)"
            elif f.name == "secret_keys":
                count = f"{len(value)} keys, newest first" if len(value) > 1 else "1 key"
                text = f"(hidden; {count}, from {self.key_origin})"
            elif f.name in ("database_url", "broker_url") and value:
                text = redact_url(str(value))
            else:
                text = as_setting_text(value)
            out[ENV_NAMES[f.name]] = text
        return out


ENV_NAMES: dict[str, str] = {
    "database_url": "MAILFLOW_DATABASE_URL",
    "secret_key": "MAILFLOW_SECRET_KEY",
    "secret_key_file": "MAILFLOW_SECRET_KEY_FILE",
    "secret_keys": "MAILFLOW_SECRET_KEYS",
    "broker_url": "MAILFLOW_BROKER_URL",
    "smtp_relay": "MAILFLOW_SMTP_RELAY",
    "smtp_connections": "MAILFLOW_SMTP_CONNECTIONS",
    "smtp_timeout_seconds": "MAILFLOW_SMTP_TIMEOUT_SECONDS",
    "maildir": "MAILFLOW_MAILDIR",
    "mail_domain": "MAILFLOW_MAIL_DOMAIN",
    "from_address": "MAILFLOW_FROM",
    "base_url": "MAILFLOW_BASE_URL",
    "service_name": "MAILFLOW_SERVICE_NAME",
    "timezone": "MAILFLOW_TIMEZONE",
    "answer_link_days": "MAILFLOW_ANSWER_LINK_DAYS",
    "send_retry_base_seconds": "MAILFLOW_SEND_RETRY_BASE_SECONDS",
    "send_max_attempts": "MAILFLOW_SEND_MAX_ATTEMPTS",
    "send_lease_seconds": "MAILFLOW_SEND_LEASE_SECONDS",
    "queue_name": "MAILFLOW_QUEUE_NAME",
    "inbound_addr": "MAILFLOW_INBOUND_ADDR",
    "inbound_max_bytes": "MAILFLOW_INBOUND_MAX_BYTES",
    "inbound_read_seconds": "MAILFLOW_INBOUND_READ_SECONDS",
    "service_addresses": "MAILFLOW_SERVICE_ADDRESSES",
    "inbound_max_sessions": "MAILFLOW_INBOUND_MAX_SESSIONS",
    "inbound_max_sessions_per_client": "MAILFLOW_INBOUND_MAX_SESSIONS_PER_CLIENT",
    "inbound_idle_seconds": "MAILFLOW_INBOUND_IDLE_SECONDS",
    "inbound_max_recipients": "MAILFLOW_INBOUND_MAX_RECIPIENTS",
    "inbound_retention_days": "MAILFLOW_INBOUND_RETENTION_DAYS",
    "imap_url": "MAILFLOW_IMAP_URL",
    "imap_after": "MAILFLOW_IMAP_AFTER",
    "imap_poll_seconds": "MAILFLOW_IMAP_POLL_SECONDS",
    "authserv_id": "MAILFLOW_AUTHSERV_ID",
    "confirm_link_hours": "MAILFLOW_CONFIRM_LINK_HOURS",
    "error_replies_per_hour": "MAILFLOW_ERROR_REPLIES_PER_HOUR",
    "confirm_emails_per_hour": "MAILFLOW_CONFIRM_EMAILS_PER_HOUR",
    "web_addr": "MAILFLOW_WEB_ADDR",
    "metrics_addr": "MAILFLOW_METRICS_ADDR",
    "help_email": "MAILFLOW_HELP_EMAIL",
    "service_desk": "MAILFLOW_SERVICE_DESK",
    "access_request_days": "MAILFLOW_ACCESS_REQUEST_DAYS",
    "access_reminder_days": "MAILFLOW_ACCESS_REMINDER_DAYS",
    "access_review_days": "MAILFLOW_ACCESS_REVIEW_DAYS",
    "reminder_hours_critical": "MAILFLOW_REMINDER_HOURS_CRITICAL",
    "reminder_hours_high": "MAILFLOW_REMINDER_HOURS_HIGH",
    "update_days": "MAILFLOW_UPDATE_DAYS",
    "unable_review_days": "MAILFLOW_UNABLE_REVIEW_DAYS",
    "working_hours": "MAILFLOW_WORKING_HOURS",
    "working_days": "MAILFLOW_WORKING_DAYS",
    "follow_up_schedule": "MAILFLOW_FOLLOW_UP_SCHEDULE",
    "digest_daily": "MAILFLOW_DIGEST_DAILY",
    "digest_weekly": "MAILFLOW_DIGEST_WEEKLY",
    "scheduler_seconds": "MAILFLOW_SCHEDULER_SECONDS",
    "log_format": "MAILFLOW_LOG_FORMAT",
    "progress_seconds": "MAILFLOW_PROGRESS_SECONDS",
}

# The keys a TOML file may use are the setting names without the prefix, in
# lower case ("database_url", "from" ...).
TOML_KEYS: dict[str, str] = {
    env.removeprefix("MAILFLOW_").lower(): name for name, env in ENV_NAMES.items()
}


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The MAILFLOW_* variables in ``environ`` that mailflow does not know
    (a misspelt setting is otherwise silently ignored), each with the
    closest known name, if one is close."""
    known = sorted({*ENV_NAMES.values(), *OTHER_VARIABLES})
    unknown: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        if not name.startswith("MAILFLOW_") or name in known:
            continue
        if name.startswith(TEST_VARIABLE_PREFIX):
            continue
        # Compared without the prefix every name shares, or any name would
        # look close to any other.
        closest = difflib.get_close_matches(
            name.removeprefix("MAILFLOW_"), [k.removeprefix("MAILFLOW_") for k in known], n=1
        )
        unknown.append((name, f"MAILFLOW_{closest[0]}" if closest else None))
    return unknown


def _read_toml(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("MAILFLOW_CONFIG", f"cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("MAILFLOW_CONFIG", f"{path} is not valid TOML: {exc}") from exc
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in TOML_KEYS:
            raise ConfigError("MAILFLOW_CONFIG", f"{path}: unknown setting {key!r}")
        if isinstance(value, bool | dict | list):
            raise ConfigError(ENV_NAMES[TOML_KEYS[key]], f"in {path}: expected text or a number")
        out[TOML_KEYS[key]] = str(value)
    return out


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, the TOML file and the environment.

    ``overrides`` (already typed values, by field name) win over everything;
    tests use it to pass explicit settings.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {"database_url": "sqlite:///var/mailflow.db"}

    config_path = Path(env["MAILFLOW_CONFIG"]) if env.get("MAILFLOW_CONFIG") else None
    if config_path is None and DEFAULT_CONFIG_FILE.exists():
        config_path = DEFAULT_CONFIG_FILE
    if config_path is not None:
        raw.update(_read_toml(config_path))
        refuse_both(raw, str(config_path))
    key_origin = str(config_path)  # if the key is in the TOML file
    if env.keys() & KEY_VARIABLES.values():
        # A key in the environment replaces the file's, whichever name it uses.
        raw = {name: text for name, text in raw.items() if name not in KEY_SETTINGS}
        key_origin = next(v for v in KEY_VARIABLES.values() if v in env)

    for name, env_name in ENV_NAMES.items():
        if env_name in env:
            raw[name] = env[env_name]
    refuse_both(raw, "the environment")

    values: dict[str, Any] = {}
    for name, text in raw.items():
        try:
            values[name] = PARSERS[name](text.strip())
        except ValueError as exc:
            raise ConfigError(ENV_NAMES[name], str(exc)) from exc
    values.update(overrides or {})

    keys, key_origin = choose_keys(values, overrides or {}, key_origin)
    values["secret_keys"] = keys
    values["secret_key"] = keys[0]
    values["secret_key_file"] = values.get("secret_key_file") or DEFAULT_SECRET_KEY_FILE
    values["key_origin"] = key_origin
    if not values.get("from_address"):
        values["from_address"] = (
            f"Cyber alerts <alerts@{values.get('mail_domain', Settings.mail_domain)}>"
        )
    if not values.get("help_email"):
        values["help_email"] = parseaddr(values["from_address"])[1]
    if not values.get("service_desk"):
        values["service_desk"] = values["help_email"]
    reminder = values.get("access_reminder_days", Settings.access_reminder_days)
    if reminder >= values.get("access_request_days", Settings.access_request_days):
        raise ConfigError(
            "MAILFLOW_ACCESS_REMINDER_DAYS",
            "must be fewer days than MAILFLOW_ACCESS_REQUEST_DAYS (the reminder comes "
            "before the request expires)",
        )
    return Settings(**values)

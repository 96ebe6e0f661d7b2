"""The values of settings: the typed sub-configs (``RelayConfig``,
``ImapConfig``) and the parser of each setting, which turns its text into
its value or raises ValueError saying what was expected.  ``config.py``
reads the settings and names the one a ValueError came from."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailflow.schedule_values import (
    parse_cron,
    parse_reminder_hours,
    parse_working_days,
    parse_working_hours,
)

MIN_SECRET_KEY_LENGTH = 32


class ConfigError(Exception):
    """A setting is missing or malformed."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class RelayConfig:
    """Where outbound mail goes: ``smtp://[user:pass@]host:port[?starttls=true]``
    or ``smtps://...`` for TLS from the first byte."""

    host: str
    port: int
    use_tls: bool = False
    start_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def redacted(self) -> str:
        scheme = "smtps" if self.use_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        query = "?starttls=true" if self.start_tls else ""
        return f"{scheme}://{user}{self.host}:{self.port}{query}"


@dataclass(frozen=True)
class ImapConfig:
    """The mailbox the IMAP poller reads, from
    ``imap[s]://user:password@host[:port]/MAILBOX`` (user and password
    URL-encoded; ``imaps`` is TLS from the first byte)."""

    host: str
    port: int
    use_tls: bool
    username: str
    password: str = field(repr=False)
    mailbox: str = "INBOX"
    # The URL as the operator wrote it, password hidden: what `mailflow
    # config` shows, so that it reads back exactly as it was set.
    written_as: str = field(default="", compare=False)

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def key(self) -> str:
        """The mailbox without the password (``user@host:port/MAILBOX``):
        the poller's checkpoint key and what stored messages record as
        their mailbox."""
        return f"{self.username}@{self.server}/{self.mailbox}"

    def redacted(self) -> str:
        if self.written_as:
            return self.written_as
        scheme = "imaps" if self.use_tls else "imap"
        mailbox = quote(self.mailbox, safe="")
        return f"{scheme}://{quote(self.username, safe='')}:***@{self.server}/{mailbox}"


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def parse_relay(text: str) -> RelayConfig:
    parts = urlsplit(text)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("expected smtp://host:port or smtps://host:port")
    if not parts.hostname:
        raise ValueError("no host given")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the port is not a number") from exc
    query = {
        k.lower(): v.lower() for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
    }
    unknown = set(query) - {"starttls"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} (only starttls=true|false)")
    start_tls = query.get("starttls", "false") in ("true", "1", "yes")
    use_tls = parts.scheme == "smtps"
    if use_tls and start_tls:
        raise ValueError("smtps:// already uses TLS; drop starttls")
    return RelayConfig(
        host=parts.hostname,
        port=port or (465 if use_tls else 25),
        use_tls=use_tls,
        start_tls=start_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _parse_broker(text: str) -> str | None:
    if not text:
        return None
    scheme = urlsplit(text).scheme
    if scheme not in ("amqp", "amqps", "redis", "rediss"):
        raise ValueError("expected amqp://... (RabbitMQ) or redis://... (Redis), or unset")
    return text


def _parse_database(text: str) -> str:
    scheme = urlsplit(text).scheme.split("+")[0]
    if scheme not in ("sqlite", "postgresql"):
        raise ValueError("expected sqlite:///path or postgresql://user@host/db")
    try:
        urlsplit(text).port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ValueError("the port is not a number from 0 to 65535") from exc
    if scheme == "postgresql" and "+" not in urlsplit(text).scheme:
        # psycopg 3 is the driver we install; say so once here rather than at
        # every place that makes an engine.
        text = "postgresql+psycopg" + text[len("postgresql") :]
    return text


def _parse_positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a whole number above 0")
    return value


def _parse_positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be a number above 0")
    return value


# A sender renews its lease every quarter of it.  Under five seconds that
# is a write a second per sender, and a pause of the process (a long garbage
# collection, a busy disk) could outlast the lease and let another sender
# take emails that are still in flight.
MIN_SEND_LEASE_SECONDS = 5.0
MAX_SEND_LEASE_SECONDS = 86400.0


def _parse_send_lease(text: str) -> float:
    value = float(text)
    if not MIN_SEND_LEASE_SECONDS <= value <= MAX_SEND_LEASE_SECONDS:
        raise ValueError(
            f"must be between {MIN_SEND_LEASE_SECONDS:g} and {MAX_SEND_LEASE_SECONDS:g} seconds: "
            "a sender renews its lease every quarter of it, so a shorter one could run out "
            "while it is still sending"
        )
    return value


def _parse_domain(text: str) -> str:
    text = text.strip().lower()
    labels = text.split(".")
    if not text or any(not label or not label.replace("-", "").isalnum() for label in labels):
        raise ValueError("expected a domain name such as alerts.example.org")
    return text


def _parse_from(text: str) -> str:
    _, addr = parseaddr(text)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError('expected an address such as "Cyber alerts <alerts@example.org>"')
    return text


def _parse_address(text: str) -> str:
    _, addr = parseaddr(text)
    if addr != text or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError("expected a bare address such as servicedesk@example.org")
    return addr


def _parse_base_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an absolute http:// or https:// URL")
    return text.rstrip("/")


def parse_secret(text: str) -> str:
    if len(text) < MIN_SECRET_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters of random text")
    return text


def parse_secret_keys(text: str) -> tuple[str, ...]:
    """MAILFLOW_SECRET_KEYS: every key, newest first, separated by commas
    or whitespace."""
    return check_secret_keys([key for key in re.split(r"[\s,]+", text) if key])


def check_secret_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """The keys, newest first, if each is long enough and none is given
    twice.  An error names a key by its place in the list, never by its
    value, since error messages reach terminals and logs."""
    if not keys:
        raise ValueError("no key given: list the keys, newest first, separated by commas")
    for place, key in enumerate(keys, 1):
        which = "the key" if len(keys) == 1 else f"key {place} of {len(keys)}"
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"{which} is too short: each key must be at least "
                f"{MIN_SECRET_KEY_LENGTH} characters of random text"
            )
        first = keys.index(key) + 1
        if first < place:
            raise ValueError(f"{which} is the same as key {first}: each key must be different")
    return tuple(keys)


def _parse_timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not a known time zone (e.g. Europe/London)") from exc
    return text


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8025")
    return host.strip("[]"), int(port)


def parse_imap_url(text: str) -> ImapConfig:
    parts = urlsplit(text)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
        raise ValueError("expected imap[s]://user:password@host[:port]/MAILBOX")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the port is not a number") from exc
    use_tls = parts.scheme == "imaps"
    return ImapConfig(
        host=parts.hostname,
        port=port or (993 if use_tls else 143),
        use_tls=use_tls,
        username=unquote(parts.username),
        password=unquote(parts.password or ""),
        mailbox=unquote(parts.path.lstrip("/")) or "INBOX",
        written_as=redact_url(text),
    )


def _parse_imap_after(text: str) -> str:
    if text in ("seen", "delete") or (text.startswith("move:") and len(text) > len("move:")):
        return text
    raise ValueError('expected "seen", "delete" or "move:FOLDER"')


LOG_FORMATS = ("text", "json")


def parse_log_format(text: str) -> str:
    """MAILFLOW_LOG_FORMAT: readable text (the default, also when empty)
    or JSON lines."""
    value = text.strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"expected text or json, not {text!r}")
    return value


PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _parse_database,
    "secret_key": parse_secret,
    "secret_keys": parse_secret_keys,
    "secret_key_file": lambda t: Path(t) if t else None,
    "broker_url": _parse_broker,
    "smtp_relay": lambda t: parse_relay(t) if t else None,
    "smtp_connections": _parse_positive_int,
    "smtp_timeout_seconds": _parse_positive_float,
    "maildir": Path,
    "mail_domain": _parse_domain,
    "from_address": _parse_from,
    "base_url": _parse_base_url,
    "service_name": str,
    "timezone": _parse_timezone,
    "answer_link_days": _parse_positive_int,
    "send_retry_base_seconds": _parse_positive_float,
    "send_max_attempts": _parse_positive_int,
    "send_lease_seconds": _parse_send_lease,
    "queue_name": str,
    "inbound_addr": lambda t: parse_host_port(t),
    "inbound_max_bytes": _parse_positive_int,
    "inbound_read_seconds": _parse_positive_float,
    "service_addresses": lambda t: tuple(p.strip().lower() for p in t.split(",") if p.strip()),
    "inbound_max_sessions": _parse_positive_int,
    "inbound_max_sessions_per_client": _parse_positive_int,
    "inbound_idle_seconds": _parse_positive_float,
    "inbound_max_recipients": _parse_positive_int,
    "inbound_retention_days": _parse_positive_int,
    "imap_url": lambda t: parse_imap_url(t) if t else None,
    "imap_after": lambda t: _parse_imap_after(t),
    "imap_poll_seconds": _parse_positive_float,
    "authserv_id": lambda t: t or None,
    "confirm_link_hours": _parse_positive_int,
    "error_replies_per_hour": _parse_positive_int,
    "confirm_emails_per_hour": _parse_positive_int,
    "web_addr": lambda t: parse_host_port(t),
    "metrics_addr": lambda t: parse_host_port(t) if t else None,
    "help_email": lambda t: _parse_address(t) if t else "",
    "service_desk": lambda t: _parse_address(t) if t else "",
    "access_request_days": _parse_positive_int,
    "access_reminder_days": _parse_positive_int,
    "access_review_days": _parse_positive_int,
    "reminder_hours_critical": parse_reminder_hours,
    "reminder_hours_high": parse_reminder_hours,
    "update_days": _parse_positive_int,
    "unable_review_days": _parse_positive_int,
    "working_hours": parse_working_hours,
    "working_days": parse_working_days,
    "follow_up_schedule": parse_cron,
    "digest_daily": parse_cron,
    "digest_weekly": parse_cron,
    "scheduler_seconds": _parse_positive_float,
    "log_format": parse_log_format,
    "progress_seconds": _parse_positive_float,
}


def as_setting_text(value: object) -> str:
    """A setting's value as a person would write it, the inverse of its
    parser above (for `mailflow config`): 127.0.0.1:8025, not a Python
    tuple; a list comma-separated; 60, not 60.0."""
    if value is None:
        return ""
    if isinstance(value, RelayConfig | ImapConfig):
        return value.redacted()
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        host, port = value
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

"""How every mailflow process writes its log: one line a record on
standard error, as readable text (the default, for a console) or as one
JSON object a line (``MAILFLOW_LOG_FORMAT=json``, for a log collector).

The JSON is written by python-json-logger (a maintained formatter), not
by hand: every line has ``time`` (ISO 8601, UTC), ``level``, ``logger``
and ``message``; a line about an event (``mailflow.core.events``) adds
``event`` and the event's fields as keys of their own.  Text lines add
the event's fields as ``key=value`` after the message.

Children started with their own interpreter (``--processes N``) read the
same setting from the environment they inherit; forked web workers keep
the parent's handler; uvicorn's own loggers are left to propagate here
(the web command gives uvicorn no logging configuration of its own)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A record's attribute naming the fields an event added (so the text
# formatter can show them); never itself written.
EVENT_FIELDS = "event_fields"
# A field's value written bare in text when it is this plain; anything
# else (spaces, quotes, line breaks from a relay's answer) is quoted as
# JSON, so one record is one line whatever a field holds.
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+{}<>=,-]+")


class TextFormatter(logging.Formatter):
    """The readable line, with an event's fields after its message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        names = getattr(record, EVENT_FIELDS, ())
        if not names:
            return line
        pairs = (f"{name}={_text_value(getattr(record, name, None))}" for name in names)
        return f"{line} event={getattr(record, 'event', '')} " + " ".join(pairs)


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    text = "" if value is None else str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            reserved_attrs=[*_JSON_SKIPPED],
        )
    return TextFormatter()


# What a LogRecord always carries, left out of the JSON line (the library's
# own default list), and the text formatter's list of an event's fields.
_JSON_SKIPPED = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
        EVENT_FIELDS,
    }
)


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler this module installs (and may re-format later)."""


def configure_logging(log_format: str, *, verbose: bool) -> None:
    """Log to standard error in ``log_format``: mailflow's own lines from
    INFO, libraries' (alembic, pika, dramatiq, uvicorn) only from WARNING,
    everything from DEBUG with ``verbose``.

    As ``logging.basicConfig`` does, a root logger that already has a
    handler someone else installed (a test run capturing logs) is left as
    it is; one of ours gets the new format."""
    root = logging.getLogger()
    if not root.handlers:
        handler = _OurHandler()
        handler.setFormatter(make_formatter(log_format))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    reformat(log_format)
    logging.getLogger("mailflow").setLevel(logging.DEBUG if verbose else logging.INFO)


def reformat(log_format: str) -> None:
    """Switch the handler installed here (if any) to ``log_format``, as
    when the setting is read from the config file after logging began."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _OurHandler):
            handler.setFormatter(make_formatter(log_format))

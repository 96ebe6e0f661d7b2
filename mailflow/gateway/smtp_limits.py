"""What keeps the inbound SMTP edge, and the process it runs in, answering
under abuse (issue 8, finding 3).

- Sessions are counted in all and per client address; one past either cap
  is told ``421 4.7.0`` and closed at once, so connections cannot eat the
  file descriptors the web edge and the database pool need too.
- A session waiting for a command is closed after the idle timeout; the
  message itself may take longer (``DATA_SECONDS``).
- The soft limit on open files is raised to the hard limit where allowed.
- When descriptors run out regardless, asyncio logs every failed accept()
  with a traceback; that log is cut to one line a minute, with a count.

Memory: aiosmtpd 1.4.6 keeps a message being received as a list of one
bytearray per line, about 67 bytes for an empty line: a message of empty
lines within the size limit took 33 times its size.  Here the message is
read into one buffer (:func:`read_data`, aiosmtpd's loop otherwise
unchanged), which stops growing once ``data_size_limit`` is passed; with
the copy handed to the handler a session holds at most about twice
``inbound_max_bytes``.  At most ``inbound_max_sessions`` sessions exist, so
the worst case is that many messages at the limit arriving at once (200 x
2 x 10 MiB by default, about 4 GiB); ``inbound_max_sessions_per_client``
keeps any one address to a tenth of that.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP

log = logging.getLogger(__name__)

REPLY_TOO_MANY_SESSIONS = "421 4.7.0 Too many connections; please try again later"
# RFC 5321 section 4.5.3.2.6 gives a client ten minutes to wait for the
# reply to the end of the data; we give the message itself five minutes to
# arrive (aiosmtpd's own timeout, before the idle timeout was shortened):
# 10 MiB in five minutes is under 300 kbit/s.
DATA_SECONDS = 300.0
# One line about running out of descriptors at most this often.
RESOURCE_LOG_SECONDS = 60.0
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# What to raise the soft limit to when the hard limit is unlimited.
DESCRIPTOR_TARGET = 65536


class SessionGate:
    """Open sessions, in all and per client address.  Touched only from
    the event loop's thread, so it needs no lock."""

    def __init__(self, *, max_sessions: int, max_per_client: int) -> None:
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.open = 0
        self._per_client: Counter[str] = Counter()
        self._refusals = RateLimitedLog(log, RESOURCE_LOG_SECONDS)

    def admit(self, client: str) -> bool:
        if self.open >= self.max_sessions or self._per_client[client] >= self.max_per_client:
            self._refusals.warning(
                "refused an SMTP connection from %s: %d sessions open, %d from it",
                client,
                self.open,
                self._per_client[client],
            )
            return False
        self.open += 1
        self._per_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]


def _client_of(peer: Any) -> str:
    """The client's address, without the port: the unit of the per-client cap."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class GatedSMTP(SMTP):
    """aiosmtpd's SMTP, admitted by a :class:`SessionGate` (a refused
    connection gets 421 instead of the greeting, and is closed), and given
    ``DATA_SECONDS`` rather than the idle timeout for the message itself
    (aiosmtpd restarts its timer only when a command arrives)."""

    def __init__(self, *args: Any, gate: SessionGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate
        self._admitted: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting_tls = self.transport is not None
        super().connection_made(transport)
        if starting_tls:
            return  # the same session, now over TLS: already counted
        assert self.session is not None
        client = _client_of(self.session.peer)
        if self._gate.admit(client):
            self._admitted = client
        else:
            self._refused = True

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if self._admitted is not None:
                self._gate.release(self._admitted)
                self._admitted = None

    async def _handle_client(self) -> None:
        # aiosmtpd 1.4.6's session coroutine, started by connection_made:
        # a refused client hears 421 where the greeting would be.
        if self._refused:
            await self.push(REPLY_TOO_MANY_SESSIONS)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd 1.4.6's DATA, reading the message with :func:`read_data`."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        self._reset_timeout(DATA_SECONDS)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            outcome, content = await read_data(
                self._reader, self.data_size_limit, self.line_length_limit
            )
        except asyncio.CancelledError:
            self._writer.close()  # the connection was lost during DATA
            raise
        if outcome is DataOutcome.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        elif outcome is DataOutcome.TOO_MUCH:
            await self.push("552 Error: Too much mail data")
        if outcome is not DataOutcome.COMPLETE:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


class DataOutcome(enum.Enum):
    COMPLETE = "complete"
    TOO_LONG = "too long a line"
    TOO_MUCH = "too much data"


async def read_data(
    reader: asyncio.StreamReader, limit: int | None, line_length_limit: int
) -> tuple[DataOutcome, bytes]:
    """The message up to the line ``.``, dot-unstuffed, in one buffer.
    As aiosmtpd 1.4.6 reads it (since CVE-2024-27305): only a line that is
    exactly ``.\r\n``, following a CRLF, ends it; once a line is too long
    or the message too large, the rest is read and dropped, and the outcome
    says which came first."""
    message = bytearray()
    outcome = DataOutcome.COMPLETE
    size = 0
    # Inside a line longer than the stream's limit, read in pieces: its
    # last piece may be ".\r\n" without ending the message.
    in_long_line = False
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as overrun:
            if outcome is DataOutcome.COMPLETE:
                outcome = DataOutcome.TOO_LONG
            message.clear()
            await reader.read(overrun.consumed)
            in_long_line = True
            continue
        if not in_long_line and line == b".\r\n":
            break
        size += len(line)
        if outcome is DataOutcome.COMPLETE and limit and size > limit:
            outcome = DataOutcome.TOO_MUCH
            message.clear()
        if outcome is DataOutcome.COMPLETE and not in_long_line:
            if len(line) > line_length_limit:
                outcome = DataOutcome.TOO_LONG
                message.clear()
            else:
                message += line[1:] if line.startswith(b".") else line
        in_long_line = False
    return outcome, bytes(message)


class GatedLMTP(GatedSMTP, LMTP):
    """The same, speaking LMTP."""


# ------------------------------------------------------ the whole process


class RateLimitedLog:
    """Logs at most one line per ``interval`` seconds, saying how many were
    left out since the last one."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next_at: float | None = None
        self._left_out = 0
        self._lock = threading.Lock()

    def due(self) -> int | None:
        """None when this line is to be left out; else how many were."""
        now = self.clock()
        with self._lock:
            if self._next_at is not None and now < self._next_at:
                self._left_out += 1
                return None
            left_out, self._left_out = self._left_out, 0
            self._next_at = now + self.interval
            return left_out

    def warning(self, message: str, *args: object) -> None:
        left_out = self.due()
        if left_out is None:
            return
        if left_out:
            message += f" ({left_out} more like it not logged)"
        self.logger.warning(message, *args)


class ResourceErrorLogLimit(logging.Filter):
    """On the ``asyncio`` logger: an event loop whose accept() fails for
    want of descriptors logs a traceback for each failure (hundreds of
    thousands in seconds, which only made matters worse).  This lets one
    through a minute, noting how many were left out, and the rest of
    asyncio's records untouched."""

    def __init__(self, interval: float = RESOURCE_LOG_SECONDS) -> None:
        super().__init__()
        self.limit = RateLimitedLog(log, interval)

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, OSError) or error.errno not in RESOURCE_ERRNOS:
            return True
        left_out = self.limit.due()
        if left_out is None:
            return False
        if left_out:
            # getMessage() formats once here; later handlers see plain text.
            record.msg = f"{record.getMessage()} ({left_out} more like it not logged)"
            record.args = None
        return True


def limit_resource_error_logs() -> None:
    """Install :class:`ResourceErrorLogLimit` on the asyncio logger, once."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, ResourceErrorLogLimit) for f in asyncio_log.filters):
        asyncio_log.addFilter(ResourceErrorLogLimit())


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit
    (an unprivileged process may), and return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = DESCRIPTOR_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open files limit raised from %d to %d", soft, target)
        return target
    return soft

"""Getting finished messages out: through an SMTP relay, or, on the embedded
defaults, into a local maildir a person can read.

Both hand back a future per message, so the caller can record each outcome
as soon as it is known while further messages are still being sent.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
import re
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosmtplib
from aiosmtplib.typing import SMTPStatus

from mailflow.config import RelayConfig
from mailflow.core.private_files import PRIVATE_FILE, make_private_folder
from mailflow.core.sending import Outcome, SendResult

# Outcome and SendResult are the domain's words for a try at sending;
# senders may name them from here.
__all__ = [
    "Envelope",
    "MaildirTransport",
    "Outcome",
    "OutgoingMessage",
    "Prepared",
    "SendResult",
    "SmtpRelayPool",
    "Transport",
    "classify_failure",
    "send_now",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipient: str


@dataclass(frozen=True)
class OutgoingMessage:
    envelope: Envelope
    data: bytes


# A message, or a function that makes it.  Given a function, the transport
# calls it just before sending, when a connection is free.
Prepared = OutgoingMessage | Callable[[], OutgoingMessage]


def _prepare(prepared: Prepared) -> OutgoingMessage:
    return prepared if isinstance(prepared, OutgoingMessage) else prepared()


class Transport(Protocol):
    """Sending runs on the transport's own event loop: ``run`` hands it a
    piece of work (bulk sending does all its composing, sending and
    recording there, on one thread, rather than two threads taking the GIL
    from each other on every SMTP round trip)."""

    async def send(self, prepared: Prepared) -> SendResult:
        """Send one message.  A failed send is an outcome; only an
        exception from making the message is raised."""
        ...

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the transport's loop and wait for its result."""
        ...

    def close(self) -> None: ...


def send_now(transport: Transport, prepared: Prepared) -> SendResult:
    async def one() -> SendResult:
        return await transport.send(prepared)

    return transport.run(one())


class MaildirTransport:
    """Writes each message into a maildir, with the envelope recorded in
    ``Return-Path`` and ``Delivered-To`` as a delivering MTA would.

    The messages carry personal links (a welcome email's enrolment link
    works once, for whoever opens it first), so the folders are 0700 and
    each message 0600: no other local user may read them."""

    def __init__(self, path: Path) -> None:
        for sub in ("tmp", "new", "cur"):
            make_private_folder(path / sub)
        self._path = path
        self._maildir = mailbox.Maildir(path, create=False)
        self._lock = threading.Lock()

    async def send(self, prepared: Prepared) -> SendResult:
        message = _prepare(prepared)
        trace = (
            f"Return-Path: <{message.envelope.mail_from}>\r\n"
            f"Delivered-To: {message.envelope.recipient}\r\n"
        ).encode("ascii")
        try:
            key = self._maildir.add(trace + message.data)
            # mailbox creates the file with the umask's mode; it sits in a
            # 0700 folder meanwhile, so no one else can open it before this.
            os.chmod(self._path / "new" / key, PRIVATE_FILE)
        except OSError as exc:
            return SendResult(Outcome.TEMPORARY, f"maildir: {exc.strerror}")
        return SendResult(Outcome.SENT, f"250 stored as {key}")

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        # Writing files needs no long-lived loop; one per piece of work.
        with self._lock:
            return asyncio.run(work)

    def close(self) -> None:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def classify_failure(exc: BaseException) -> SendResult:
    """Turn an aiosmtplib error into an outcome: 5xx replies are final,
    everything else (4xx, lost connections, timeouts) is worth a retry."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException) and 500 <= exc.code < 600:
        return SendResult(Outcome.PERMANENT, _describe(exc))
    return SendResult(Outcome.TEMPORARY, _describe(exc))


# An address we can put in MAIL FROM or RCPT TO as it is: our own bounce
# addresses and the stored addresses of our users.  aiosmtplib's mail() and
# rcpt() parse every address with email.utils first, which cost a twentieth
# of fan-out's time; anything unusual still goes through them.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


async def _mail(client: aiosmtplib.SMTP, sender: str, options: list[str]) -> None:
    if not _PLAIN_ADDRESS.fullmatch(sender):
        await client.mail(sender, options=options)
        return
    args = [f"FROM:<{sender}>".encode("ascii"), *(o.encode("ascii") for o in options)]
    response = await client.execute_command(b"MAIL", *args)
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(client: aiosmtplib.SMTP, recipient: str) -> None:
    if not _PLAIN_ADDRESS.fullmatch(recipient):
        await client.rcpt(recipient)
        return
    response = await client.execute_command(b"RCPT", f"TO:<{recipient}>".encode("ascii"))
    if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


class SmtpRelayPool:
    """A pool of persistent connections to one SMTP relay.

    The connections live on an event loop in a thread of their own, so any
    worker thread can send through them and they outlive a single job.  A
    connection that breaks is dropped and opened again on next use.
    """

    def __init__(self, relay: RelayConfig, *, connections: int = 4, timeout: float = 60.0) -> None:
        self._relay = relay
        self._timeout = timeout
        self._size = connections
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="smtp-relay", daemon=True
        )
        self._thread.start()
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = self.run(self._make_queue())

    async def _make_queue(self) -> asyncio.Queue[aiosmtplib.SMTP]:
        queue: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(self._size):
            queue.put_nowait(self._new_client())
        return queue

    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._relay.host,
            port=self._relay.port,
            use_tls=self._relay.use_tls,
            start_tls=self._relay.start_tls,
            username=self._relay.username,
            password=self._relay.password,
            timeout=self._timeout,
        )

    async def send(self, prepared: Prepared) -> SendResult:
        client = await self._idle.get()
        try:
            message = _prepare(prepared)
        except Exception:
            self._idle.put_nowait(client)
            raise
        try:
            if not client.is_connected:
                await client.connect()
                await client.ehlo()
            return await self._transact(client, message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            if not isinstance(exc, aiosmtplib.SMTPResponseException) or exc.code in (421,):
                # The connection is in an unknown state: start afresh next time.
                client.close()
                client = self._new_client()
            return classify_failure(exc)
        finally:
            self._idle.put_nowait(client)

    @staticmethod
    async def _transact(client: aiosmtplib.SMTP, message: OutgoingMessage) -> SendResult:
        """MAIL, RCPT and DATA for one message.  (aiosmtplib's sendmail
        would first run a regular expression over the whole message to
        work out its SIZE; ours are composed with CRLF line endings, so
        their length is the size.)"""
        options = [f"SIZE={len(message.data)}"] if client.supports_extension("size") else []
        try:
            await _mail(client, message.envelope.mail_from, options)
            await _rcpt(client, message.envelope.recipient)
            response = await client.data(message.data)
        except aiosmtplib.SMTPResponseException:
            # Leave the connection ready for the next message.
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
            raise
        return SendResult(Outcome.SENT, f"{response.code} {response.message}")

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def close(self) -> None:
        async def _quit_all() -> None:
            while not self._idle.empty():
                client = self._idle.get_nowait()
                if client.is_connected:
                    try:
                        await client.quit()
                    except (aiosmtplib.SMTPException, OSError):
                        client.close()

        if self._loop.is_running():
            self.run(_quit_all())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

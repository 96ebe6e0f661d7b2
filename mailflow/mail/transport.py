"""Getting finished messages out: through an SMTP relay, or, on the embedded
defaults, into a local maildir a person can read.

Both hand back a future per message, so the caller can record each outcome
as soon as it is known while further messages are still being sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import mailbox
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosmtplib

from mailflow.config import RelayConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outcome(enum.StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx or no connection: try again later
    PERMANENT = "permanent"  # 5xx: the relay will never take it


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipient: str


@dataclass(frozen=True)
class OutgoingMessage:
    envelope: Envelope
    data: bytes


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reply: str


# A message, or a function that makes it.  Given a function, the transport
# calls it when a connection is free, on its own thread: in bulk sending
# this keeps composing and sending on one thread, instead of two threads
# taking the GIL from each other for every SMTP round trip.
Prepared = OutgoingMessage | Callable[[], OutgoingMessage]


def _prepare(prepared: Prepared) -> OutgoingMessage:
    return prepared if isinstance(prepared, OutgoingMessage) else prepared()


class Transport(Protocol):
    def submit(self, prepared: Prepared) -> concurrent.futures.Future[SendResult]:
        """Start sending; the future holds the outcome.  A failed send is an
        outcome; only an exception from making the message is raised (by
        the future)."""
        ...

    def submit_many(
        self, prepared: Sequence[Prepared]
    ) -> list[concurrent.futures.Future[SendResult]]: ...

    def close(self) -> None: ...


def _done(result: SendResult) -> concurrent.futures.Future[SendResult]:
    future: concurrent.futures.Future[SendResult] = concurrent.futures.Future()
    future.set_result(result)
    return future


class MaildirTransport:
    """Writes each message into a maildir, with the envelope recorded in
    ``Return-Path`` and ``Delivered-To`` as a delivering MTA would."""

    def __init__(self, path: Path) -> None:
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(path, create=False)

    def submit(self, prepared: Prepared) -> concurrent.futures.Future[SendResult]:
        try:
            message = _prepare(prepared)
        except Exception as exc:
            future: concurrent.futures.Future[SendResult] = concurrent.futures.Future()
            future.set_exception(exc)
            return future
        trace = (
            f"Return-Path: <{message.envelope.mail_from}>\r\n"
            f"Delivered-To: {message.envelope.recipient}\r\n"
        ).encode("ascii")
        try:
            key = self._maildir.add(trace + message.data)
        except OSError as exc:
            return _done(SendResult(Outcome.TEMPORARY, f"maildir: {exc.strerror}"))
        return _done(SendResult(Outcome.SENT, f"250 stored as {key}"))

    def submit_many(
        self, prepared: Sequence[Prepared]
    ) -> list[concurrent.futures.Future[SendResult]]:
        return [self.submit(p) for p in prepared]

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
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = self._call(self._make_queue())
        # The loop keeps only weak references to tasks; these keep them alive.
        self._tasks: set[asyncio.Task[None]] = set()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

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

    async def _send_one(self, prepared: Prepared) -> SendResult:
        client = await self._idle.get()
        try:
            message = _prepare(prepared)
        except Exception:
            self._idle.put_nowait(client)
            raise
        try:
            if not client.is_connected:
                await client.connect()
            errors, reply = await client.sendmail(
                message.envelope.mail_from, [message.envelope.recipient], message.data
            )
            if errors:
                code, text = next(iter(errors.values()))
                return classify_failure(aiosmtplib.SMTPResponseException(code, text))
            return SendResult(Outcome.SENT, reply)
        except (aiosmtplib.SMTPException, OSError) as exc:
            if not isinstance(exc, aiosmtplib.SMTPResponseException) or exc.code in (421,):
                # The connection is in an unknown state: start afresh next time.
                client.close()
                client = self._new_client()
            return classify_failure(exc)
        finally:
            self._idle.put_nowait(client)

    def submit(self, prepared: Prepared) -> concurrent.futures.Future[SendResult]:
        return asyncio.run_coroutine_threadsafe(self._send_one(prepared), self._loop)

    def submit_many(
        self, prepared: Sequence[Prepared]
    ) -> list[concurrent.futures.Future[SendResult]]:
        """Like submit for each, with one wake-up of the relay's thread for
        the whole batch rather than one per message."""
        futures: list[concurrent.futures.Future[SendResult]] = [
            concurrent.futures.Future() for _ in prepared
        ]

        async def send(item: Prepared, future: concurrent.futures.Future[SendResult]) -> None:
            try:
                future.set_result(await self._send_one(item))
            except Exception as exc:
                future.set_exception(exc)

        def start_all() -> None:
            for item, future in zip(prepared, futures, strict=True):
                task = self._loop.create_task(send(item, future))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self._loop.call_soon_threadsafe(start_all)
        return futures

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
            self._call(_quit_all())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

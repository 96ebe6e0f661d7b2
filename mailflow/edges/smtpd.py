"""The inbound SMTP (or LMTP) server: replies and bounces come in here.

It accepts mail only for our own addresses (``reply+KEY@``, ``bounce+KEY@``
and the service addresses at the mail domain), and answers 250 to a message
only once its raw bytes and its processing job are committed (invariant 2).
Any failure before that is a 451, so the sending MTA keeps the message and
tries again; nothing here ever answers 250 and then loses the message.

Nothing is judged here beyond the envelope and the line endings: a message
with no headers, binary junk or a forged header block is stored as it came,
and the processing job decides what it is (invariants 6 and 7).

SMTP smuggling: aiosmtpd 1.4.6 (since 1.4.5, CVE-2024-27305) reads DATA
with ``readuntil(b"\\r\\n")`` and ends it only at a line that is exactly
``.\\r\\n`` following a CRLF, so ``\\n.\\n``, ``\\n.\\r\\n`` and ``\\r.\\r\\n``
do not end the message: they stay inside it, and what follows them is never
read as commands.  Such a message necessarily holds a bare LF or CR, and
every message with a bare CR or LF is refused as a whole (550 5.6.0), so
none of it reaches the database, nor a later reader that might split lines
more leniently than we did.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import weakref
from concurrent.futures import Future
from typing import AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SMTPSession

from mailflow.domain.inbound import Received, store_received_messages
from mailflow.mail.addresses import parse_service_address
from mailflow.mail.raw_headers import limits_problem
from mailflow.workers.runtime import Runtime

log = logging.getLogger(__name__)

# A CR not followed by LF, or an LF not preceded by CR.
BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# inbound_messages.envelope_from is VARCHAR(512): a longer sender could never
# be stored, and a 451 for it would only make the sender try for days.
ENVELOPE_FROM_MAX = 512
# How long stop() waits for messages being committed, so that their senders
# get their 250 rather than a dropped connection and a needless retry.
STOP_GRACE_SECONDS = 10.0
# At most this many messages in one commit.
GROUP_COMMIT_MAX = 64

REPLY_ACCEPTED = "250 2.0.0 OK: message stored"
REPLY_TRY_LATER = "451 4.3.0 Temporary failure storing the message; please try again later"
REPLY_BARE_LINE_END = (
    "550 5.6.0 Message refused: it contains a bare CR or LF; "
    "lines must end with CRLF (RFC 5321 section 2.3.8)"
)
REPLY_HEADER_TOO_LARGE = "552 5.3.4 Message refused: {}"
REPLY_UNKNOWN_RECIPIENT = (
    "550 5.1.1 No such mailbox: this server only takes replies to its own alert emails"
)


def _null_sender(mail_from: str | None) -> str | None:
    """The envelope sender to store: None for the null reverse-path
    ``<>`` of bounces and auto-replies (aiosmtpd gives it as "<>")."""
    if not mail_from or mail_from == "<>":
        return None
    return mail_from


def _unstorable_sender(address: str) -> str | None:
    """Why an envelope sender cannot be stored as text, or None."""
    if address == "<>":
        return None
    try:
        encoded = address.encode("utf-8")
    except UnicodeEncodeError:
        # aiosmtpd decodes with surrogateescape: the bytes were not UTF-8.
        return "sender address is not valid UTF-8"
    if len(encoded) > ENVELOPE_FROM_MAX:
        return "sender address too long"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        return "sender address contains control characters"
    return None


class GroupCommitter:
    """Stores messages on one thread, committing together whatever arrived
    while the previous commit ran (group commit).  Each sender still hears
    250 only after the commit that holds its message; one commit per
    message, with SMTP sessions queueing for SQLite's write lock, was most
    of the cost of receiving."""

    def __init__(self, runtime: Runtime, *, max_batch: int = GROUP_COMMIT_MAX) -> None:
        self.runtime = runtime
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Received, Future[int]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="smtpd-store", daemon=True)
        self._thread.start()

    def submit(self, received: Received) -> Future[int]:
        future: Future[int] = Future()
        self._queue.put((received, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[tuple[Received, Future[int]]]) -> None:
        try:
            with self.runtime.sessions.begin() as session:
                ids = store_received_messages(
                    session, [received for received, _ in batch], now=self.runtime.clock()
                )
        except Exception as exc:
            if len(batch) > 1:
                # One message must not take others down with it: each on
                # its own, so only a message that cannot be stored fails.
                for item in batch:
                    self._commit([item])
                return
            batch[0][1].set_exception(exc)
            return
        for (_, future), message_id in zip(batch, ids, strict=True):
            future.set_result(message_id)


class InboundHandler:
    """aiosmtpd handler: check recipients at RCPT, store at DATA."""

    def __init__(self, runtime: Runtime, committer: GroupCommitter) -> None:
        self.runtime = runtime
        self.committer = committer
        # Messages being committed now (touched only on the event loop).
        self.storing = 0

    def accepts(self, address: str) -> bool:
        """Whether ``address`` is one of ours: reply+KEY or bounce+KEY at the
        mail domain, or one of the service addresses there."""
        settings = self.runtime.settings
        if parse_service_address(address, settings.mail_domain) is not None:
            return True
        local, at, domain = address.strip().strip("<>").rpartition("@")
        service = {name.lower() for name in settings.service_addresses}
        if not at:
            # RFC 5321 4.5.1: <Postmaster> without a domain must be accepted.
            return domain.lower() == "postmaster" and "postmaster" in service
        return domain.lower() == settings.mail_domain.lower() and local.lower() in service

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Any sender, including the null one of bounces; only a sender that
        # could never be stored is refused, permanently.
        problem = _unstorable_sender(address)
        if problem is not None:
            return f"553 5.1.7 {problem}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepts(address):
            log.info("refused recipient %r from %s", address, session.peer)
            return REPLY_UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SMTPSession, envelope: Envelope) -> str:
        """One reply for the message; for LMTP, ``InboundLMTP`` repeats it
        once per recipient (they share one stored copy and one fate)."""
        try:
            raw = envelope.original_content
            if raw is None:
                raise RuntimeError("aiosmtpd gave no message content")
            if BARE_CR_OR_LF.search(raw) is not None:
                log.info("refused a message from %s: bare CR or LF", session.peer)
                return REPLY_BARE_LINE_END
            # A header beyond what the processing job will read is refused
            # now, while the sender can still be told (invariant 7).
            beyond = limits_problem(raw)
            if beyond is not None:
                log.info("refused a message from %s: %s", session.peer, beyond)
                return REPLY_HEADER_TOO_LARGE.format(beyond)
            received = Received(
                raw=bytes(raw),
                source="lmtp" if isinstance(server, LMTP) else "smtp",
                envelope_from=_null_sender(envelope.mail_from),
                envelope_to=list(envelope.rcpt_tos),
            )
            self.storing += 1
            try:
                message_id = await asyncio.wrap_future(self.committer.submit(received))
            finally:
                self.storing -= 1
        except Exception:
            log.exception(
                "could not store a message from %s (envelope from %r to %r): answered 451",
                session.peer,
                envelope.mail_from,
                envelope.rcpt_tos,
            )
            return REPLY_TRY_LATER
        log.debug("stored inbound message %s from %s", message_id, session.peer)
        # Only now, with the commit returned, may the sender forget it.
        return REPLY_ACCEPTED

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is "500 Error: ...", a permanent failure that
        # would bounce a reply over our own fault; say "try later" instead.
        log.error("error in an SMTP session: answered 451", exc_info=error)
        return REPLY_TRY_LATER


class InboundLMTP(LMTP):
    """aiosmtpd's LMTP, with RFC 2033's one reply per accepted recipient
    after DATA.  aiosmtpd 1.4.6 sends a single reply there, whatever it is
    (the handler's, or its own 552 for too much data or 500 for too long a
    line), which would leave an LMTP client waiting for the rest; here every
    reply that ends the DATA phase is sent once for each recipient."""

    _replies_due = 0
    _reading_data = False

    async def smtp_DATA(self, arg: str) -> None:
        self._replies_due = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        self._reading_data = False
        try:
            await super().smtp_DATA(arg)
        finally:
            self._replies_due = 0
            self._reading_data = False

    async def push(self, status: AnyStr) -> None:
        code = status[:3]
        if self._replies_due and not self._reading_data:
            # Before "354", a reply is to the DATA command itself: only one.
            if code in ("354", b"354"):
                self._reading_data = True
            await super().push(status)
            return
        if self._replies_due:
            due, self._replies_due = self._replies_due, 0
            for _ in range(due - 1):
                await super().push(status)
        await super().push(status)


class InboundServer:
    """The handler on a listening socket, served by an event loop in a
    thread of its own; ``start()`` returns once it listens."""

    def __init__(
        self,
        runtime: Runtime,
        host: str,
        port: int,
        *,
        lmtp: bool = False,
    ) -> None:
        self.runtime = runtime
        self.host = host
        self.requested_port = port
        self.lmtp = lmtp
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._committer: GroupCommitter | None = None
        self._handler: InboundHandler | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    def _make_protocol(self) -> SMTP:
        assert self._loop is not None
        settings = self.runtime.settings
        protocol_class = InboundLMTP if self.lmtp else SMTP
        protocol = protocol_class(
            self._handler,
            data_size_limit=settings.inbound_max_bytes,
            enable_SMTPUTF8=True,
            hostname=settings.mail_domain,
            ident="mailflow LMTP" if self.lmtp else "mailflow ESMTP",
            loop=self._loop,
        )
        self._connections.add(protocol)
        return protocol

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the inbound server is already running")
        # Made here rather than racing to be made by the first few messages.
        self.runtime.sessions  # noqa: B018
        loop = asyncio.new_event_loop()
        committer = GroupCommitter(self.runtime)
        self._handler = InboundHandler(self.runtime, committer)
        thread = threading.Thread(target=loop.run_forever, name="smtpd", daemon=True)
        thread.start()
        self._loop, self._committer = loop, committer
        try:
            self._server = asyncio.run_coroutine_threadsafe(
                loop.create_server(self._make_protocol, self.host, self.requested_port), loop
            ).result()
        except BaseException:
            self._loop = None
            self._committer = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            committer.stop()
            raise
        self._thread = thread

    def stop(self) -> None:
        loop, thread, committer = self._loop, self._thread, self._committer
        if loop is None or thread is None or committer is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shut_down(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            committer.stop()
            self._loop = self._thread = None
            self._committer = None
            self._server = None

    async def _shut_down(self) -> None:
        assert self._server is not None and self._handler is not None
        self._server.close()
        await self._server.wait_closed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_SECONDS
        while self._handler.storing and loop.time() < deadline:
            await asyncio.sleep(0.02)
        # A handler task that brought `storing` down wrote its reply in the
        # same step, and closing a transport sends what it has buffered:
        # those senders have their answer.  Now hang up on everyone.
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        others = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)
            for task in others:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved, so asyncio does not complain

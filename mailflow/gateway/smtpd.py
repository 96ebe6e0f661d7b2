"""The inbound SMTP (or LMTP) server: replies and bounces come in here.

It accepts mail only for our own addresses (``reply+KEY@`` and
``bounce+KEY@`` whose key a recent delivery holds, looked up at RCPT, and
the service addresses at the mail domain), at most
MAILFLOW_INBOUND_MAX_RECIPIENTS of them a message, from at most
MAILFLOW_INBOUND_MAX_SESSIONS sessions at once (see ``smtp_limits``).  It
answers 250 to a message only once its raw bytes and its processing job are
committed (invariant 2).  Any failure before that is a 451, so the sending
MTA keeps the message and tries again; nothing here ever answers 250 and
then loses the message.

What it answers to each command is decided by ``inbound_handler``; this
module runs the server: its listening socket and event loop thread, LMTP's
reply per recipient, the hourly purge and the graceful stop.

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
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import AnyStr

from aiosmtpd.smtp import SMTP

from mailflow.core.runtime import Runtime
from mailflow.gateway.group_commit import GroupCommitter
from mailflow.gateway.inbound_handler import InboundHandler
from mailflow.gateway.key_lookups import KeyLookups
from mailflow.gateway.retention import PURGE_INTERVAL_SECONDS, purge_expired_inbound
from mailflow.gateway.routing import KeyKinds
from mailflow.gateway.smtp_limits import (
    GatedLMTP,
    GatedSMTP,
    SessionGate,
    limit_resource_error_logs,
    raise_descriptor_limit,
)

log = logging.getLogger(__name__)

# How long stop() waits for messages being committed, so that their senders
# get their 250 rather than a dropped connection and a needless retry.
STOP_GRACE_SECONDS = 10.0


class InboundLMTP(GatedLMTP):
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
    thread of its own; ``start()`` returns once it listens.  ``key_kinds``
    is the shell's list of what reply keys belong to, asked at RCPT.  With
    ``reuse_port``, other processes may listen on the same port (SO_REUSEPORT:
    ``mailflow smtpd --processes N``)."""

    def __init__(
        self,
        runtime: Runtime,
        host: str,
        port: int,
        *,
        key_kinds: KeyKinds,
        lmtp: bool = False,
        reuse_port: bool = False,
    ) -> None:
        self.runtime = runtime
        self.reuse_port = reuse_port
        self.key_kinds = key_kinds
        self.host = host
        self.requested_port = port
        self.lmtp = lmtp
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._committer: GroupCommitter | None = None
        self._handler: InboundHandler | None = None
        self._lookups: KeyLookups | None = None
        self._purger: ThreadPoolExecutor | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._gate = SessionGate(
            max_sessions=runtime.settings.inbound_max_sessions,
            max_per_client=runtime.settings.inbound_max_sessions_per_client,
        )
        self._purging: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    def _make_protocol(self) -> SMTP:
        assert self._loop is not None
        settings = self.runtime.settings
        protocol_class = InboundLMTP if self.lmtp else GatedSMTP
        protocol = protocol_class(
            self._handler,
            gate=self._gate,
            timeout=settings.inbound_idle_seconds,
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
        raise_descriptor_limit()
        limit_resource_error_logs()
        # Made here rather than racing to be made by the first few messages.
        self.runtime.sessions  # noqa: B018
        loop = asyncio.new_event_loop()
        committer = GroupCommitter(self.runtime)
        lookups = KeyLookups(self.runtime, self.key_kinds)
        self._handler = InboundHandler(self.runtime, committer, lookups, self.key_kinds)
        self._lookups = lookups
        self._purger = ThreadPoolExecutor(1, thread_name_prefix="smtpd-purge")
        thread = threading.Thread(target=loop.run_forever, name="smtpd", daemon=True)
        thread.start()
        self._loop, self._committer = loop, committer
        try:
            self._server = asyncio.run_coroutine_threadsafe(
                loop.create_server(
                    self._make_protocol,
                    self.host,
                    self.requested_port,
                    reuse_port=self.reuse_port or None,
                ),
                loop,
            ).result()
        except BaseException:
            self._loop = None
            self._committer = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            committer.stop()
            lookups.stop()
            self._purger.shutdown()
            raise
        self._thread = thread
        self._purging = asyncio.run_coroutine_threadsafe(self._purge_hourly(), loop).result()

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
            if self._lookups is not None:
                self._lookups.stop()
            if self._purger is not None:
                self._purger.shutdown()
            self._loop = self._thread = None
            self._committer = None
            self._server = None

    async def _purge_hourly(self) -> asyncio.Task[None]:
        """Start purging old ignored messages now and every hour (there is
        no scheduler yet), on a thread of its own."""

        async def purge_every_hour() -> None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    await loop.run_in_executor(
                        self._purger, lambda: purge_expired_inbound(self.runtime, actor="smtpd")
                    )
                except Exception:
                    log.exception("purging old inbound messages failed; trying again in an hour")
                await asyncio.sleep(PURGE_INTERVAL_SECONDS)

        return asyncio.get_running_loop().create_task(purge_every_hour())

    async def _shut_down(self) -> None:
        assert self._server is not None and self._handler is not None
        if self._purging is not None:
            self._purging.cancel()
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

"""What every process of mailflow shares: settings, the database, the
outbound transport and a clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailflow.config import Settings
from mailflow.core.bounded_calls import BoundedCalls, Result
from mailflow.core.mail.transport import MaildirTransport, SmtpRelayPool, Transport
from mailflow.core.sending import SendPolicy
from mailflow.db.engine import make_engine, make_sessionmaker


def utc_now() -> datetime:
    return datetime.now(UTC)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._transport = transport
        self._bounded: dict[Callable[..., object], BoundedCalls[Any]] = {}
        # Worker threads share one transport: two jobs starting at once must
        # not each build a relay pool (each pool runs its own event loop).
        self._transport_lock = threading.Lock()

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def reader_engine(self) -> Engine:
        # On SQLite the main engine takes the write lock at BEGIN; pollers
        # that only look use this one, so they never hold up a writer.
        return make_engine(self.settings.database_url, immediate=False)

    @cached_property
    def readers(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.reader_engine)

    def bounded(
        self, function: Callable[..., Result], result: type[Result], seconds: float
    ) -> BoundedCalls[Result]:
        """``function`` run in child processes, at most ``seconds`` a call
        (the gateway reads inbound mail so); the children are kept for the
        next call until ``close``."""
        calls = self._bounded.get(function)
        if calls is None:
            calls = self._bounded[function] = BoundedCalls(function, result, seconds)
        assert calls.result is result
        return calls

    @property
    def send_policy(self) -> SendPolicy:
        """How every email, alert or one-off, is tried again."""
        return SendPolicy(self.settings.send_retry_base_seconds, self.settings.send_max_attempts)

    @property
    def transport(self) -> Transport:
        with self._transport_lock:
            return self._make_transport()

    def _make_transport(self) -> Transport:
        if self._transport is None:
            relay = self.settings.smtp_relay
            if relay is not None:
                self._transport = SmtpRelayPool(
                    relay,
                    connections=self.settings.smtp_connections,
                    timeout=self.settings.smtp_timeout_seconds,
                )
            else:
                self._transport = MaildirTransport(self.settings.maildir)
        return self._transport

    def close(self) -> None:
        with self._transport_lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        bounded, self._bounded = self._bounded, {}
        for calls in bounded.values():
            calls.close()
        for name in ("engine", "reader_engine"):
            if name in self.__dict__:
                self.__dict__[name].dispose()

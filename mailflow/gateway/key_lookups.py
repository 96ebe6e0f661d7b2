"""Whether reply and bounce keys are in use, asked at RCPT: looked up on a
thread of their own, off the event loop, whatever keys arrived together in
one read-only session."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.alerts.deliveries import bounce_key_in_use
from mailflow.core.mail.addresses import AddressKind, ServiceAddress
from mailflow.core.runtime import Runtime
from mailflow.gateway.batching import BatchThread
from mailflow.gateway.routing import KeyKinds

# At most this many keys in one session.
LOOKUP_BATCH_MAX = 64


class KeyLookups:
    """One thread and at most one database connection for every session's
    RCPT look-ups, however many sessions there are."""

    def __init__(self, runtime: Runtime, key_kinds: KeyKinds) -> None:
        self.runtime = runtime
        self.key_kinds = key_kinds
        self._thread: BatchThread[ServiceAddress, bool] = BatchThread(
            "smtpd-lookup", self._look_up, max_batch=LOOKUP_BATCH_MAX
        )

    def in_use(self, address: ServiceAddress) -> asyncio.Future[bool]:
        """On the event loop: whether the address's key is in use."""
        return self._thread.submit(address)

    def stop(self) -> None:
        self._thread.stop()

    def _look_up(self, batch: list[ServiceAddress]) -> list[bool | BaseException]:
        now = self.runtime.clock()
        outcomes: list[bool | BaseException] = []
        session: Session | None = None
        try:
            for address in batch:
                if session is None:
                    session = self.runtime.readers()
                try:
                    outcomes.append(self._key_in_use(session, address, now))
                except Exception as exc:
                    # This key fails alone; the rest get a fresh session.
                    outcomes.append(exc)
                    session.close()
                    session = None
        finally:
            if session is not None:
                session.close()
        return outcomes

    def _key_in_use(self, session: Session, address: ServiceAddress, now: datetime) -> bool:
        if address.kind is AddressKind.REPLY:
            settings = self.runtime.settings
            return self.key_kinds.accepts(session, address.key, settings=settings, now=now)
        return bounce_key_in_use(session, address.key, now=now)

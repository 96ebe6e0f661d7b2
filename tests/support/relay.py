"""A real SMTP relay for tests: aiosmtpd on a loopback port that keeps
every message it accepts, and can be told to refuse some."""

from __future__ import annotations

import asyncio
import email
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes
    # The client's address and port: which connection brought it.
    peer: tuple[str, int] | None = None

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CapturingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        # Replies to give to DATA, in order, before falling back to 250.
        self.data_replies: list[str] = []
        self.delay_seconds = 0.0
        # The reply to DATA for mail to these recipients, every time.
        self.refuse: dict[str, str] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        with self.lock:
            refusal = self.refuse.get(envelope.rcpt_tos[0])
            if refusal:
                return refusal
            if self.data_replies:
                reply = self.data_replies.pop(0)
                if not reply.startswith("250"):
                    return reply
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.content),
                    peer=_peer(session),
                )
            )
        return "250 2.0.0 Message accepted"


def _peer(session: Any) -> tuple[str, int] | None:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return None


class CapturingRelay:
    def __init__(self) -> None:
        self.handler = CapturingHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    def __enter__(self) -> CapturingRelay:
        self.controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"relay received {len(self.received)} messages, expected {count}")

"""Running a long-lived process until SIGTERM or Ctrl-C, and naming the
address it listens on."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import click
from sqlalchemy.engine import Engine

from mailflow.cli.processes import parent_is_gone
from mailflow.config import parse_host_port
from mailflow.core.doctor import OK, commit_durability

log = logging.getLogger("mailflow")


def warn_unless_commits_are_durable(engine: Engine) -> None:
    """A server that accepts mail answers 250 on the strength of a commit;
    say so at start-up if the database may lose commits in a crash
    (PostgreSQL with synchronous_commit=off)."""
    finding = commit_durability(engine)
    if finding.status != OK:
        log.warning("mail answered 250 may be lost: %s", finding.detail)


def run_until_stopped(start: Callable[[], None], stop: Callable[[], None]) -> None:
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %s: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start()
    try:
        while not stopping.wait(1.0):
            if parent_is_gone():
                log.warning("the parent process is gone: stopping")
                break
    finally:
        stop()


def show_addr(host: str, port: int) -> str:
    """An address as people write it: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HostPort(click.ParamType[tuple[str, int], Any]):
    """A ``--listen HOST:PORT`` option."""

    name = "HOST:PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_host_port(str(value).strip())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

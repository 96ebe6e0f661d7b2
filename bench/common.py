"""What the benchmarks in this folder share: the alert they issue, a counting
SMTP sink in a process of its own, database seeding, settings, the handling
of server subprocesses and the command-line options they all take.

The scripts are run as ``python bench/NAME.py``; they import this module as
``bench.common``, which the editable install of the project makes importable.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from mailflow.alerts.issuing import DELIVER_ALERT
from mailflow.config import Settings, load_settings, parse_relay
from mailflow.core.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Membership,
    Organisation,
    Role,
    User,
)

HOST = "127.0.0.1"
MAIL_DOMAIN = "bench.example.org"
USER_DOMAIN = "users.bench.example"
SECRET_KEY = "bench-secret-key-" + "x" * 40
USERS_PER_ORG = 10

ALERT = {
    "title": "Remote code execution in Example VPN Gateway",
    "severity": "high",
    "summary": (
        "A critical flaw in the web interface of Example VPN Gateway lets an\n"
        "unauthenticated attacker run code on the appliance. It is being exploited.\n"
    ),
    "affected": ["Example VPN Gateway 9.0 to 9.4", "Example VPN Gateway 10.0 to 10.1"],
    "cves": ["CVE-2026-41234"],
    "remediation": (
        "Upgrade to 9.4.2 or 10.1.1. If you cannot upgrade at once, disable the web\n"
        "interface on external addresses and review logs for signs of compromise.\n"
    ),
    "references": ["https://example.org/advisories/vpn-2026-41234"],
    "deadline_hours": 48,
}


# --------------------------------------------------------------- arguments


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)


def add_database_and_timeout_arguments(parser: argparse.ArgumentParser, timeout_help: str) -> None:
    parser.add_argument(
        "--database-url", default=None, help="default: a fresh SQLite file in a temporary directory"
    )
    parser.add_argument("--timeout", type=float, default=None, help=timeout_help)


def configure_logging() -> None:
    # Warnings only: mailflow's info lines would drown the results.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# -------------------------------------------------------------------- sink


class _CountingHandler:
    """Answers 250 to every message and counts it; nothing else."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.counter.value += 1
        return "250 2.0.0 OK"


def _run_sink(
    port: int,
    counter: Any,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(
        _CountingHandler(counter),
        hostname=HOST,
        port=port,
        server_hostname="sink.localhost",
        ready_timeout=30,
    )
    controller.start()
    ready.set()
    try:
        stop.wait()
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Sink:
    """An aiosmtpd server in a child process (loopback, free port), so that
    it does not share the GIL with the sender, whose handler answers 250;
    ``count`` is how many messages it accepted."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self._counter: Any = ctx.RawValue(ctypes.c_int64, 0)
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=_run_sink,
            args=(self.port, self._counter, self._ready, self._stop),
            name="smtp-sink",
            daemon=True,
        )

    def __enter__(self) -> Sink:
        self._process.start()
        if not self._ready.wait(60):
            self._process.kill()
            raise RuntimeError("the SMTP sink did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    @property
    def count(self) -> int:
        return int(self._counter.value)

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


# ------------------------------------------------------------ fixture data


def insert_organisations(
    conn: Connection, org_type: str, names_by_code: dict[str, str], now: datetime
) -> dict[str, int]:
    """Organisations of a type of their own (so that an alert can be sent
    to just them); returns each code's id."""
    conn.execute(
        insert(Organisation),
        [
            {
                "code": code,
                "name": name,
                "type": org_type,
                "parent_id": None,
                "opened_on": None,
                "closed_on": None,
                "created_at": now,
                "updated_at": now,
            }
            for code, name in names_by_code.items()
        ],
    )
    return {
        code: id_
        for code, id_ in conn.execute(
            select(Organisation.code, Organisation.id).where(Organisation.type == org_type)
        )
    }


def insert_users(
    conn: Connection, names_by_email: dict[str, str], email_suffix: str, now: datetime
) -> dict[str, int]:
    """Active users; returns each email's id, found again by ``email_suffix``
    (the random tag and domain that every one of these emails ends in)."""
    conn.execute(
        insert(User),
        [
            {
                "email": email,
                "name": name,
                "national_role": None,
                "active": True,
                "created_at": now,
            }
            for email, name in names_by_email.items()
        ],
    )
    return {
        email: id_
        for email, id_ in conn.execute(
            select(User.email, User.id).where(User.email.like(f"%{email_suffix}"))
        )
    }


def insert_memberships(
    conn: Connection, memberships: Iterable[tuple[int, Role, int]], now: datetime
) -> None:
    """Each (user id, role, organisation id)."""
    conn.execute(
        insert(Membership),
        [
            {"user_id": user_id, "role": role, "created_at": now, "organisation_id": org_id}
            for user_id, role, org_id in memberships
        ],
    )


def mark_alerts_sent(session: Session, alert_ids: list[int], now: datetime) -> None:
    """Mark the alerts' deliveries sent and their delivery jobs done, as if
    a worker had sent them: nothing is left for a worker that later meets
    this database but what the benchmark itself makes."""
    session.execute(
        update(Delivery)
        .where(Delivery.alert_id.in_(alert_ids))
        .values(state=DeliveryState.SENT, attempts=1, sent_at=now, updated_at=now)
    )
    for job in session.scalars(
        select(Job).where(Job.kind == DELIVER_ALERT, Job.state == JobState.PENDING)
    ):
        if job.payload.get("alert_id") in alert_ids:
            job.state = JobState.DONE
            job.finished_at = now


# ---------------------------------------------------------------- settings


def web_settings(database_url: str) -> Settings:
    """The least settings a web app over ``database_url`` takes."""
    return load_settings(
        environ={}, overrides={"database_url": database_url, "secret_key": SECRET_KEY}
    )


def relay_settings(
    database_url: str, relay_port: int, connections: int, environ: dict[str, str]
) -> Settings:
    """Settings that send mail to a local relay (a sink) over ``connections``
    connections."""
    return load_settings(
        environ=environ,
        overrides={
            "database_url": database_url,
            "secret_key": SECRET_KEY,
            "smtp_relay": parse_relay(f"smtp://{HOST}:{relay_port}"),
            "smtp_connections": connections,
            "mail_domain": MAIL_DOMAIN,
        },
    )


def server_env(database_url: str, config_file: Path) -> dict[str, str]:
    """The environment for a `python -m mailflow ...` server: this one
    without any MAILFLOW_ variable of the caller's, which would change what
    is measured, plus the bench's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env.update(
        MAILFLOW_CONFIG=str(config_file),
        MAILFLOW_DATABASE_URL=database_url,
        MAILFLOW_SECRET_KEY=SECRET_KEY,
        MAILFLOW_MAIL_DOMAIN=MAIL_DOMAIN,
    )
    return env


# --------------------------------------------------------- server processes


def wait_until_serving(
    process: subprocess.Popen[bytes], is_serving: Callable[[], bool], timeout: float
) -> Literal["serving", "exited", "timed out"]:
    """Ask ``is_serving`` every 50 ms until it says yes, the process ends
    or ``timeout`` seconds pass; each caller says for itself what failing
    means."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return "exited"
        if is_serving():
            return "serving"
        time.sleep(0.05)
    return "timed out"


def stop_process_group(process: subprocess.Popen[bytes], first_signal: signal.Signals) -> None:
    """Send ``first_signal`` to the process group started for a server (so
    that a wrapper such as a profiler gets it too); SIGKILL if it has not
    ended within 30 seconds."""
    if process.poll() is None:
        os.killpg(process.pid, first_signal)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def log_tail(path: Path) -> str:
    """The last 20 lines of a server's log, to show when it failed."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])

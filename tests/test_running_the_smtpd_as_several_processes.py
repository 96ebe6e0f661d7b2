"""`mailflow smtpd --processes N`: N server processes on one port, started,
watched and stopped by the command's own process; real SMTP into the real
command, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.models import InboundMessage, Job
from mailflow.gateway.inbound_messages import PROCESS_INBOUND
from tests.support.environment import SECRET_KEY
from tests.support.relay import free_port
from tests.support.seed import delivery_with_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

DOMAIN = "alerts.test"
KEY = "abcdefghijklmnopqrstuvwxyz234567"
REPLY = f"reply+{KEY}@{DOMAIN}"
SENDER = "pat.jones@trust.example.org"


def message(number: int) -> bytes:
    return (
        b"From: Pat Jones <pat.jones@trust.example.org>\r\n"
        b"To: Cyber alerts <" + REPLY.encode() + b">\r\n"
        b"Subject: Re: [CC-4720] Critical vulnerability in Example VPN\r\n"
        b"Message-ID: <reply-%d@trust.example.org>\r\n"
        b"\r\n"
        b"RXA: complete\r\n" % number
    )


@pytest.fixture
def known_key(session: Session) -> None:
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()


def start_smtpd(
    database_url: str, port: int, tmp_path: Path, *options: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MAILFLOW_DATABASE_URL": database_url,
        "MAILFLOW_SECRET_KEY": SECRET_KEY,
        "MAILFLOW_MAIL_DOMAIN": DOMAIN,
    }
    for name in ("MAILFLOW_BROKER_URL", "MAILFLOW_CONFIG", "MAILFLOW_INBOUND_ADDR"):
        env.pop(name, None)
    with (tmp_path / "smtpd.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mailflow", "smtpd", "--listen", f"127.0.0.1:{port}", *options],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )


def children_of(process: subprocess.Popen[bytes]) -> set[int]:
    path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return {int(pid) for pid in path.read_text().split()}


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "smtpd.log").read_text(errors="replace")


def wait_serving(process: subprocess.Popen[bytes], port: int, tmp_path: Path, count: int) -> None:
    def serving() -> bool:
        assert process.poll() is None, log_of(tmp_path)
        return (
            len(children_of(process)) == count and log_of(tmp_path).count("listening on") >= count
        )

    wait_until(serving, timeout=60, what=f"{count} smtpd processes listening")
    assert greets(port)


@pytest.fixture
def stop_at_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def send_one(port: int, number: int, *, lmtp: bool = False) -> int:
    """One message on a connection of its own; the reply to its data."""
    client = (smtplib.LMTP if lmtp else smtplib.SMTP)("127.0.0.1", port, timeout=30)
    try:
        client.ehlo("client.example.org")
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(REPLY)[0] == 250
        return client.data(message(number))[0]
    finally:
        client.close()


def stored(engine: sa.Engine) -> list[InboundMessage]:
    with Session(engine) as session:
        return list(session.scalars(select(InboundMessage).order_by(InboundMessage.id)))


def assert_each_stored_and_queued_once(engine: sa.Engine, numbers: list[int]) -> None:
    messages = stored(engine)
    expected = sorted(f"<reply-{n}@trust.example.org>" for n in numbers)
    assert sorted(m.message_id_header or "" for m in messages) == expected
    with Session(engine) as session:
        jobs = session.scalars(select(Job).where(Job.kind == PROCESS_INBOUND)).all()
    assert sorted(j.payload["inbound_message_id"] for j in jobs) == [m.id for m in messages]


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_two_processes_on_one_port_store_every_message_exactly_once(
    database_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    known_key: None,
    stop_at_end: list[subprocess.Popen[bytes]],
    lmtp: bool,
) -> None:
    port = free_port()
    options = ["--processes", "2", *(["--lmtp"] if lmtp else [])]
    parent = start_smtpd(database_url, port, tmp_path, *options)
    stop_at_end.append(parent)
    wait_serving(parent, port, tmp_path, 2)

    numbers = list(range(40))
    codes: dict[int, int] = {}

    def send_share(share: list[int]) -> None:
        for number in share:
            codes[number] = send_one(port, number, lmtp=lmtp)

    senders = [threading.Thread(target=send_share, args=(numbers[i::4],)) for i in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()

    assert codes == dict.fromkeys(numbers, 250)
    assert_each_stored_and_queued_once(engine, numbers)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0, log_of(tmp_path)


def test_sigterm_to_the_parent_stops_every_child_and_keeps_every_250(
    database_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    known_key: None,
    stop_at_end: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    parent = start_smtpd(database_url, port, tmp_path, "--processes", "2")
    stop_at_end.append(parent)
    wait_serving(parent, port, tmp_path, 2)
    children = children_of(parent)

    accepted: list[int] = []
    stop_sending = threading.Event()

    def keep_sending(first: int) -> None:
        number = first
        while not stop_sending.is_set():
            try:
                if send_one(port, number) == 250:
                    accepted.append(number)
            except (OSError, smtplib.SMTPException):
                pass  # the server went away mid-message: never told 250
            number += 4

    senders = [threading.Thread(target=keep_sending, args=(i,)) for i in range(4)]
    for sender in senders:
        sender.start()
    wait_until(lambda: len(accepted) >= 20, timeout=60, what="20 messages accepted")
    parent.send_signal(signal.SIGTERM)
    try:
        assert parent.wait(timeout=60) == 0, log_of(tmp_path)
    finally:
        stop_sending.set()
        for sender in senders:
            sender.join()

    assert len(children) == 2
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()
    assert not greets(port)
    stored_ids = {m.message_id_header for m in stored(engine)}
    assert {f"<reply-{n}@trust.example.org>" for n in accepted} <= stored_ids


def test_a_killed_child_is_replaced(
    database_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    known_key: None,
    stop_at_end: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    parent = start_smtpd(database_url, port, tmp_path, "--processes", "2")
    stop_at_end.append(parent)
    wait_serving(parent, port, tmp_path, 2)
    victim, survivor = sorted(children_of(parent))

    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (
            len(children_of(parent) - {victim, survivor}) == 1
            and log_of(tmp_path).count("listening on") >= 3
        ),
        timeout=60,
        what="a new smtpd process in place of the killed one",
    )
    assert f"(pid {victim}) exited with code -9; starting another in" in log_of(tmp_path)
    assert survivor in children_of(parent)

    numbers = list(range(10))
    assert [send_one(port, n) for n in numbers] == [250] * 10
    assert_each_stored_and_queued_once(engine, numbers)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0, log_of(tmp_path)


def test_the_command_says_when_the_port_cannot_be_bound(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_smtpd(database_url, port, tmp_path, "--processes", "2")
        assert process.wait(timeout=60) == 2
    assert f"mailflow: cannot listen on 127.0.0.1:{port}" in log_of(tmp_path)


def test_a_child_that_dies_at_once_is_restarted_ever_more_slowly(tmp_path: Path) -> None:
    program = (
        "import logging, sys\n"
        "from mailflow.cli.processes import ChildProcesses\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "failing = [sys.executable, '-c', 'raise SystemExit(3)']\n"
        "sys.exit(ChildProcesses('failing', lambda i: failing, 1).run())\n"
    )
    log_path = tmp_path / "parent.log"
    with log_path.open("wb") as log:
        parent = subprocess.Popen([sys.executable, "-c", program], stdout=log, stderr=log)
    try:
        wait_until(
            lambda: "starting another in 2.0s" in log_path.read_text(),
            timeout=60,
            what="the third restart",
        )
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
    text = log_path.read_text()
    delays = [line.rsplit(" ", 1)[1] for line in text.splitlines() if "starting another" in line]
    assert delays[:3] == ["0.5s", "1.0s", "2.0s"], text
    assert "failing process 1 (pid" in text and "exited with code 3" in text

"""The inbound SMTP edge under abuse, over real sockets (issue 8, findings 3
and 4): too many connections, idle connections, made-up and expired reply
keys, too many recipients, and what is kept of ignored mail.  Each test says
what the attacker sees and checks that nothing was recorded or sent."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import resource
import smtplib
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.core.models import AuditEvent, InboundMessage, InboundState, OutgoingEmail
from mailflow.core.runtime import Runtime, utc_now
from mailflow.gateway.inbound_messages import finish_inbound, store_inbound_message
from mailflow.gateway.smtp_limits import limit_resource_error_logs, raise_descriptor_limit
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from tests.support.environment import SECRET_KEY
from tests.support.relay import CapturingRelay, free_port
from tests.support.seed import NOW, delivery_with_keys
from tests.support.waiting import wait_until

DOMAIN = "alerts.test"
KEY = "abcdefghijklmnopqrstuvwxyz234567"
REPLY = f"reply+{KEY}@{DOMAIN}"
SENDER = "pat.jones@trust.example.org"
MESSAGE = (
    b"From: Pat Jones <pat.jones@trust.example.org>\r\n"
    b"Subject: Re: [CC-4720] Critical vulnerability\r\n"
    b"\r\n"
    b"RXA: complete\r\n"
)


@pytest.fixture
def start_server(
    settings_for: Any, database_url: str, relay: CapturingRelay
) -> Iterator[Callable[..., InboundServer]]:
    started: list[InboundServer] = []

    def start(**overrides: Any) -> InboundServer:
        settings = settings_for(database_url, **{"inbound_max_bytes": 64 * 1024, **overrides})
        server = InboundServer(Runtime(settings), "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.runtime.close()


def greeting(port: int, client_address: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """A connection from ``client_address`` and the first line it is told."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(client_address, 0)
    )
    return sock, sock.makefile("rb").readline()


def smtp_client(port: int, *, timeout: float = 10) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=timeout)
    client.ehlo("mta.example.org")
    return client


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def stored(engine: sa.Engine) -> list[InboundMessage]:
    with Session(engine) as session:
        return list(session.scalars(select(InboundMessage).order_by(InboundMessage.id)))


def nothing_sent(engine: sa.Engine, relay: CapturingRelay) -> bool:
    with Session(engine) as session:
        queued = session.scalar(select(sa.func.count()).select_from(OutgoingEmail))
    return queued == 0 and relay.received == []


# ------------------------------------------------------ finding 3: sessions


def test_connections_past_the_caps_hear_421_and_mail_gets_through_once_they_close(
    start_server: Callable[..., InboundServer],
    session: Session,
    engine: sa.Engine,
    relay: CapturingRelay,
) -> None:
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()
    server = start_server(inbound_max_sessions=5, inbound_max_sessions_per_client=3)

    held = [greeting(server.port) for _ in range(3)]
    one_too_many, told = greeting(server.port)
    # Another address still gets in, until the total is reached.
    held += [greeting(server.port, "127.0.0.2") for _ in range(2)]
    past_total, told_past_total = greeting(server.port, "127.0.0.3")

    assert [line[:4] for _, line in held] == [b"220 "] * 5
    assert told.startswith(b"421 4.7.0 ")
    assert told_past_total.startswith(b"421 4.7.0 ")
    assert closed_by_server(one_too_many) and closed_by_server(past_total)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", server.port, timeout=5)
    assert refused.value.smtp_code == 421
    assert stored(engine) == []

    for sock, _ in held:
        sock.close()
    one_too_many.close()
    past_total.close()

    def reply_is_taken() -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
                return client.sendmail(SENDER, [REPLY], MESSAGE) == {}
        except smtplib.SMTPConnectError:
            return False  # the server has not yet seen every close

    wait_until(reply_is_taken, timeout=10, what="a reply to be taken again")
    assert [m.raw for m in stored(engine)] == [MESSAGE]


def test_an_idle_connection_is_closed_and_frees_its_place_but_a_slow_message_is_not_cut(
    start_server: Callable[..., InboundServer],
    session: Session,
    engine: sa.Engine,
) -> None:
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()
    server = start_server(inbound_idle_seconds=0.5, inbound_max_sessions_per_client=1)

    idle, line = greeting(server.port)
    assert line.startswith(b"220 ")
    time.sleep(1.0)
    assert closed_by_server(idle)
    idle.close()

    # The place it held is free again, and a message that takes longer to
    # send than the idle timeout still arrives whole.
    with smtp_client(server.port) as client:
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(REPLY)[0] == 250
        assert client.docmd("DATA")[0] == 354
        for line in MESSAGE.splitlines(keepends=True):
            client.send(line)
            time.sleep(0.3)
        client.send(b".\r\n")
        assert client.getreply()[0] == 250
    assert [m.raw for m in stored(engine)] == [MESSAGE]


@pytest.mark.slow
def test_serve_keeps_its_web_pages_answering_while_smtp_is_flooded_with_connections(
    database_url: str, tmp_path: Path
) -> None:
    """With fewer descriptors than the flood has connections, the SMTP edge
    refuses what is past its cap and the web edge in the same process still
    answers."""
    smtp_port, web_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")},
        "MAILFLOW_DATABASE_URL": database_url,
        "MAILFLOW_SECRET_KEY": SECRET_KEY,
        "MAILFLOW_MAIL_DOMAIN": DOMAIN,
        "MAILFLOW_MAILDIR": str(tmp_path / "maildir"),
        "MAILFLOW_INBOUND_ADDR": f"127.0.0.1:{smtp_port}",
        "MAILFLOW_WEB_ADDR": f"127.0.0.1:{web_port}",
        "MAILFLOW_INBOUND_MAX_SESSIONS": "40",
        "MAILFLOW_INBOUND_MAX_SESSIONS_PER_CLIENT": "1000",
    }
    descriptors = 160

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    log_path = tmp_path / "serve.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailflow", "serve", "--threads", "1"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
            preexec_fn=few_descriptors,
        )
    flood: list[socket.socket] = []
    try:
        wait_until(
            lambda: web_answers(web_port) and smtp_listens(smtp_port),
            timeout=30,
            what="mailflow serve to listen",
        )
        answers = []
        for _ in range(descriptors + 40):
            sock = socket.create_connection(("127.0.0.1", smtp_port), timeout=5)
            flood.append(sock)
            answers.append(sock.makefile("rb").readline()[:4])
        assert answers.count(b"220 ") == 40
        assert answers.count(b"421 ") == len(answers) - 40
        # Flooded, and the pages still answer.
        assert web_answers(web_port)
    finally:
        for sock in flood:
            sock.close()
        process.terminate()
        process.wait(timeout=30)
    log_text = log_path.read_text(errors="replace")
    assert "Too many open files" not in log_text
    assert log_text.count("refused an SMTP connection") == 1


def smtp_listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_running_out_of_descriptors_is_logged_once_a_minute_not_once_an_accept(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    limit_resource_error_logs()
    limit_resource_error_logs()  # once is enough, however often it is called
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(1000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    }
                )
            loop.call_exception_handler(
                {"message": "something else", "exception": ValueError("other")}
            )
    finally:
        loop.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert messages == ["socket.accept() out of system resource", "something else"]


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 2:
        pytest.skip("the hard limit here is unlimited or tiny")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
    try:
        assert raise_descriptor_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard // 2), hard))


# ------------------------------------------------ finding 4: what is stored


def test_mail_to_made_up_or_expired_reply_and_bounce_keys_is_refused_and_nothing_is_kept(
    start_server: Callable[..., InboundServer],
    session: Session,
    engine: sa.Engine,
    relay: CapturingRelay,
) -> None:
    expired = "expiredexpiredexpiredexpired2345"
    # Older than the answer links (30 days) and than any bounce can be.
    delivery_with_keys(
        session, reply_key=expired, bounce_key=expired, created_at=NOW - timedelta(days=31)
    )
    session.commit()
    server = start_server(answer_link_days=30)
    rng = random.Random(4720)
    made_up = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz234567", k=32)) for _ in range(10)]
    refused = [
        *(f"reply+{key}@{DOMAIN}" for key in made_up),
        f"reply+{expired}@{DOMAIN}",
        f"bounce+{expired}@{DOMAIN}",
        f"bounce+{KEY}@{DOMAIN}",
    ]
    big = b"Subject: filler\r\n\r\n" + (b"x" * 78 + b"\r\n") * 600

    with smtp_client(server.port) as client:
        for address in refused:
            assert client.mail(SENDER)[0] == 250
            code, text = client.rcpt(address)
            assert (code, text[:6]) == (550, b"5.1.1 "), address
            assert b"unknown or has expired" in text
            assert client.docmd("DATA")[0] == 503
            client.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, refused[:3], big)

    assert stored(engine) == []
    assert nothing_sent(engine, relay)


def test_a_bounce_a_week_after_the_alert_is_taken_though_older_ones_are_not(
    start_server: Callable[..., InboundServer], session: Session, engine: sa.Engine
) -> None:
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY, created_at=NOW - timedelta(days=7))
    session.commit()
    # Answer links last only 5 days here: replies are refused, bounces not.
    server = start_server(answer_link_days=5)
    with smtp_client(server.port) as client:
        assert client.mail("")[0] == 250
        assert client.rcpt(REPLY)[0] == 550
        assert client.rcpt(f"bounce+{KEY}@{DOMAIN}")[0] == 250
        assert client.data(b"Subject: Undelivered\r\n\r\n5.1.1\r\n")[0] == 250
    [message] = stored(engine)
    assert message.envelope_to == [f"bounce+{KEY}@{DOMAIN}"]


def test_recipients_past_the_cap_get_452_and_only_those_taken_are_recorded(
    start_server: Callable[..., InboundServer], session: Session, engine: sa.Engine
) -> None:
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()
    server = start_server(inbound_max_recipients=3)
    with smtp_client(server.port) as client:
        assert client.mail(SENDER)[0] == 250
        codes = [client.rcpt(r) for r in [REPLY, f"alerts@{DOMAIN}", REPLY, REPLY, REPLY]]
        assert [code for code, _ in codes] == [250, 250, 250, 452, 452]
        assert codes[3][1].startswith(b"4.5.3 ")
        assert client.data(MESSAGE)[0] == 250
        # The next message starts counting again.
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(REPLY)[0] == 250
        client.rset()
    [message] = stored(engine)
    assert message.envelope_to == [REPLY, f"alerts@{DOMAIN}", REPLY]


# ----------------------------------------------------------- retention


def keep_message(session: Session, raw: bytes, *, days_ago: int, state: InboundState) -> int:
    at = NOW - timedelta(days=days_ago)
    message = store_inbound_message(
        session, raw, source="smtp", envelope_from=SENDER, envelope_to=[REPLY], now=at
    )
    if state is not InboundState.RECEIVED:
        finish_inbound(session, message, state=state, outcome="test", now=at)
    return message.id


def test_ignored_messages_past_the_retention_period_are_purged_and_the_rest_kept(
    database_url: str,
    session: Session,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    old_junk = [
        keep_message(session, b"junk %d\r\n" % n, days_ago=40, state=InboundState.IGNORED)
        for n in range(3)
    ]
    recent_junk = keep_message(session, b"recent junk\r\n", days_ago=5, state=InboundState.IGNORED)
    old_processed = keep_message(session, b"a reply\r\n", days_ago=40, state=InboundState.PROCESSED)
    old_failed = keep_message(session, b"failed\r\n", days_ago=40, state=InboundState.FAILED)
    waiting = keep_message(session, b"waiting\r\n", days_ago=40, state=InboundState.RECEIVED)
    session.commit()

    env = {"MAILFLOW_DATABASE_URL": database_url, "MAILFLOW_SECRET_KEY": SECRET_KEY}
    # Away from any config/mailflow.toml of the project's own.
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(cli, ["inbound", "purge"], env=env, catch_exceptions=False)
    again = CliRunner().invoke(
        cli,
        ["inbound", "purge"],
        env={**env, "MAILFLOW_INBOUND_RETENTION_DAYS": "3"},
        catch_exceptions=False,
    )

    assert first.exit_code == 0 and "deleted 3 ignored message(s)" in first.output
    assert again.exit_code == 0 and "deleted 1 ignored message(s)" in again.output
    assert [m.id for m in stored(engine)] == [old_processed, old_failed, waiting]
    with Session(engine) as check:
        purges = list(
            check.scalars(select(AuditEvent).where(AuditEvent.action == "inbound.purged"))
        )
    assert [p.details["count"] for p in purges] == [3, 1]
    assert purges[0].subject == f"inbound:{old_junk[0]}-{old_junk[-1]}"
    assert purges[1].subject == f"inbound:{recent_junk}-{recent_junk}"


def test_the_smtp_edge_purges_old_ignored_messages_when_it_starts(
    start_server: Callable[..., InboundServer], session: Session, engine: sa.Engine
) -> None:
    keep_message(session, b"old junk\r\n", days_ago=31, state=InboundState.IGNORED)
    kept = keep_message(session, b"young junk\r\n", days_ago=29, state=InboundState.IGNORED)
    session.commit()
    start_server(inbound_retention_days=30)
    wait_until(lambda: len(stored(engine)) == 1, timeout=10, what="the purge")
    assert [m.id for m in stored(engine)] == [kept]


def test_a_message_of_empty_lines_is_held_in_memory_at_about_its_own_size(
    start_server: Callable[..., InboundServer], session: Session, engine: sa.Engine
) -> None:
    """aiosmtpd kept one object per line, 67 bytes for each empty line:
    concurrent messages of empty lines within the size limit took many
    times the memory the limit promises."""
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()
    limit = 1024 * 1024
    server = start_server(inbound_max_bytes=limit)
    empty_lines = b"Subject: nothing\r\n" + b"\r\n" * ((limit - 18) // 2)
    assert len(empty_lines) <= limit
    # Under tracemalloc the server takes seconds over a message this size;
    # what is checked here is memory, not time.
    with smtp_client(server.port, timeout=60) as client:
        tracemalloc.start()
        try:
            assert client.sendmail(SENDER, [REPLY], empty_lines) == {}
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # The client's copies, the buffer, the handler's copy and the insert.
    assert peak < 8 * limit
    [message] = stored(engine)
    assert message.raw == empty_lines


def test_a_client_that_hangs_up_while_its_message_is_stored_does_not_stop_the_server(
    settings_for: Any, database_url: str, session: Session, engine: sa.Engine
) -> None:
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()

    def slow_in_the_store() -> datetime:
        if threading.current_thread().name == "smtpd-store":
            time.sleep(0.5)
        return utc_now()

    server = InboundServer(
        Runtime(settings_for(database_url), clock=slow_in_the_store),
        "127.0.0.1",
        0,
        key_kinds=REPLY_KEY_KINDS,
    )
    server.start()
    try:
        gone, _ = greeting(server.port)
        gone.sendall(
            b"EHLO mta.example.org\r\nMAIL FROM:<" + SENDER.encode() + b">\r\n"
            b"RCPT TO:<" + REPLY.encode() + b">\r\nDATA\r\n" + MESSAGE + b".\r\n"
        )
        time.sleep(0.2)  # its message is being stored now
        gone.close()
        with smtp_client(server.port) as client:
            assert client.sendmail(SENDER, [REPLY], MESSAGE + b"again\r\n") == {}
    finally:
        server.stop()
        server.runtime.close()
    assert [m.raw for m in stored(engine)] == [MESSAGE, MESSAGE + b"again\r\n"]

"""The inbound SMTP/LMTP server, over real sockets, on SQLite and PostgreSQL:
250 only after the message and its job are committed, 451 when they could
not be, 5xx for what can never be accepted, and nothing stored then."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.core.models import InboundMessage, Job, JobState
from mailflow.core.runtime import Runtime, utc_now
from mailflow.db.engine import make_sessionmaker
from mailflow.gateway.inbound_messages import PROCESS_INBOUND, store_inbound_message
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from tests.support.environment import SECRET_KEY
from tests.support.relay import free_port
from tests.support.seed import delivery_with_keys

DOMAIN = "alerts.test"
KEY = "abcdefghijklmnopqrstuvwxyz234567"
REPLY = f"reply+{KEY}@{DOMAIN}"
BOUNCE = f"bounce+{KEY}@{DOMAIN}"
ALERTS = f"alerts@{DOMAIN}"
POSTMASTER = f"postmaster@{DOMAIN}"
SENDER = "pat.jones@trust.example.org"
MAX_BYTES = 64 * 1024

REPLY_MESSAGE = (
    b"From: Pat Jones <pat.jones@trust.example.org>\r\n"
    b"To: Cyber alerts <" + REPLY.encode() + b">\r\n"
    b"Subject: Re: [CC-4720] Critical vulnerability in Example VPN\r\n"
    b"Message-ID: <reply-1@trust.example.org>\r\n"
    b"\r\n"
    b"RXA: complete\r\n"
    b"\r\n"
    b"> quoted alert text\r\n"
)


# ------------------------------------------------------------------ helpers


def slow_clock(seconds: float) -> Callable[[], datetime]:
    """A clock that takes its time in the store thread: the store (which
    reads the clock inside its transaction) is slow, so a 250 sent before
    the commit would show."""

    def now() -> datetime:
        if threading.current_thread().name == "smtpd-store":
            time.sleep(seconds)
        return utc_now()

    return now


@pytest.fixture
def known_keys(session: Session) -> None:
    """KEY is the reply and the bounce key of a recent delivery."""
    delivery_with_keys(session, reply_key=KEY, bounce_key=KEY)
    session.commit()


@pytest.fixture
def start_server(
    settings_for: Any, database_url: str, known_keys: None
) -> Iterator[Callable[..., InboundServer]]:
    started: list[InboundServer] = []

    def start(
        *,
        lmtp: bool = False,
        url: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> InboundServer:
        settings = settings_for(
            url or database_url,
            inbound_addr=("127.0.0.1", 0),
            inbound_max_bytes=MAX_BYTES,
            service_addresses=("alerts", "postmaster"),
        )
        server = InboundServer(
            Runtime(settings, clock=clock), "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS, lmtp=lmtp
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.runtime.close()


@pytest.fixture
def server(start_server: Callable[..., InboundServer]) -> InboundServer:
    return start_server()


def smtp_client(server: InboundServer) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    client.ehlo("client.example.org")
    return client


def lmtp_client(server: InboundServer) -> smtplib.LMTP:
    client = smtplib.LMTP("127.0.0.1", server.port, timeout=10)
    client.ehlo("mta.example.org")  # sends LHLO
    return client


def send(
    client: smtplib.SMTP, sender: str, recipients: list[str], data: bytes
) -> tuple[int, list[int], tuple[int, bytes] | None]:
    """MAIL, RCPT for each recipient, and DATA if one was accepted: the
    codes, and the reply to the end of the data."""
    mail_code, _ = client.mail(sender)
    rcpt_codes = [client.rcpt(r)[0] for r in recipients]
    if 250 not in rcpt_codes:
        client.rset()
        return mail_code, rcpt_codes, None
    return mail_code, rcpt_codes, client.data(data)


def stored(engine: sa.Engine) -> list[InboundMessage]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(InboundMessage).order_by(InboundMessage.id)))


def jobs(engine: sa.Engine) -> list[Job]:
    """The inbound processing jobs (not the alert's own)."""
    with Session(engine, expire_on_commit=False) as session:
        query = select(Job).where(Job.kind == PROCESS_INBOUND).order_by(Job.id)
        return list(session.scalars(query))


def assert_queued_once(engine: sa.Engine, messages: list[InboundMessage]) -> None:
    """Exactly one pending process_inbound job per stored message."""
    found = jobs(engine)
    assert [(j.kind, j.state, j.payload) for j in found] == [
        (PROCESS_INBOUND, JobState.PENDING, {"inbound_message_id": m.id}) for m in messages
    ]


def assert_session_in_step(client: smtplib.SMTP) -> None:
    """No reply is left over in the connection: the next command gets its
    own answer."""
    assert client.noop() == (250, b"OK")


# ---------------------------------------------------------- stored, then 250


def test_a_reply_is_committed_with_its_job_before_the_client_hears_250_and_others_are_served_meanwhile(  # noqa: E501
    start_server: Callable[..., InboundServer], engine: sa.Engine
) -> None:
    server = start_server(clock=slow_clock(1.5))
    outcome: dict[str, Any] = {}

    def reply() -> None:
        with smtp_client(server) as client:
            outcome["codes"] = send(client, SENDER, [REPLY], REPLY_MESSAGE)
            # Looked at the instant the 250 arrives: no waiting, no polling.
            outcome["stored"] = stored(engine)
            outcome["jobs"] = jobs(engine)

    sender = threading.Thread(target=reply)
    sender.start()
    try:
        time.sleep(0.4)  # the first client is now in DATA, being stored
        started = time.monotonic()
        with smtp_client(server) as other:
            assert other.noop() == (250, b"OK")
        assert time.monotonic() - started < 0.8, "the event loop waited for the database"
        assert sender.is_alive(), "the first message was answered before it could be stored"
    finally:
        sender.join(timeout=30)

    mail_code, rcpt_codes, data_reply = outcome["codes"]
    assert (mail_code, rcpt_codes) == (250, [250])
    assert data_reply is not None
    assert data_reply[0] == 250 and data_reply[1].startswith(b"2.0.0 ")
    [message] = outcome["stored"]
    assert message.raw == REPLY_MESSAGE
    assert message.size == len(REPLY_MESSAGE)
    assert message.source == "smtp"
    assert message.envelope_from == SENDER
    assert message.envelope_to == [REPLY]
    assert message.message_id_header == "<reply-1@trust.example.org>"
    assert [(j.kind, j.state, j.payload) for j in outcome["jobs"]] == [
        (PROCESS_INBOUND, JobState.PENDING, {"inbound_message_id": message.id})
    ]


def test_stop_lets_a_message_being_stored_finish_and_get_its_250(
    start_server: Callable[..., InboundServer], engine: sa.Engine
) -> None:
    server = start_server(clock=slow_clock(1.0))
    outcome: dict[str, Any] = {}

    def reply() -> None:
        with smtp_client(server) as client:
            outcome["codes"] = send(client, SENDER, [REPLY], REPLY_MESSAGE)

    sender = threading.Thread(target=reply)
    sender.start()
    time.sleep(0.4)
    server.stop()
    sender.join(timeout=30)
    assert outcome["codes"][2][0] == 250
    assert [m.raw for m in stored(engine)] == [REPLY_MESSAGE]


def test_a_bounce_with_the_null_sender_is_accepted_and_recorded_as_having_no_sender(
    server: InboundServer, engine: sa.Engine
) -> None:
    bounce = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n"
        b"\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Status: 5.1.1\r\n--b--\r\n"
    )
    with smtp_client(server) as client:
        mail_code, rcpt_codes, data_reply = send(client, "", [BOUNCE], bounce)
    assert (mail_code, rcpt_codes) == (250, [250])
    assert data_reply is not None and data_reply[0] == 250
    [message] = stored(engine)
    assert message.raw == bounce
    assert message.envelope_from is None
    assert message.envelope_to == [BOUNCE]
    assert_queued_once(engine, [message])


# -------------------------------------------------------------- recipients


NOT_OURS = [
    f"nobody@{DOMAIN}",
    f"reply+{KEY}@elsewhere.test",
    f"reply+{KEY}@{DOMAIN}.evil.example",
    f"reply+short@{DOMAIN}",
    f"reply+{KEY}x@{DOMAIN}",
    f"bounce+{KEY[:-1]}@{DOMAIN}",
    f"other+{KEY}@{DOMAIN}",
    f"reply{KEY}@{DOMAIN}",
    "alerts@elsewhere.test",
    "someone@example.org",
    "nobody",
]


def test_recipients_that_are_not_ours_are_refused_550_and_nothing_is_stored(
    server: InboundServer, engine: sa.Engine
) -> None:
    with smtp_client(server) as client:
        assert client.mail(SENDER)[0] == 250
        for address in NOT_OURS:
            code, text = client.rcpt(address)
            assert (code, text[:6]) == (550, b"5.1.1 "), address
        # No recipient, so no message.
        code, _ = client.docmd("DATA")
        assert code == 503
        assert_session_in_step(client)
    assert stored(engine) == []
    assert jobs(engine) == []


def test_only_accepted_recipients_are_recorded(server: InboundServer, engine: sa.Engine) -> None:
    with smtp_client(server) as client:
        _, rcpt_codes, data_reply = send(
            client, SENDER, [f"nobody@{DOMAIN}", REPLY, "someone@example.org"], REPLY_MESSAGE
        )
    assert rcpt_codes == [550, 250, 550]
    assert data_reply is not None and data_reply[0] == 250
    [message] = stored(engine)
    assert message.envelope_to == [REPLY]


def test_service_addresses_and_our_addresses_in_any_case_are_accepted(
    server: InboundServer, engine: sa.Engine
) -> None:
    ours = [
        f"alerts@{DOMAIN}",
        "ALERTS@Alerts.Test",
        f"Postmaster@{DOMAIN}",
        "postmaster",  # RFC 5321 4.5.1: without a domain
        f"REPLY+{KEY.upper()}@{DOMAIN.upper()}",
        BOUNCE,
    ]
    with smtp_client(server) as client:
        _, rcpt_codes, data_reply = send(client, SENDER, ours, REPLY_MESSAGE)
    assert rcpt_codes == [250] * len(ours)
    assert data_reply is not None and data_reply[0] == 250
    [message] = stored(engine)
    assert message.envelope_to == ours


@pytest.mark.parametrize(
    "command",
    [
        b"MAIL FROM:<\xff\xfe@example.org>",  # not UTF-8
        b"MAIL FROM:<" + b"a" * 520 + b"@example.org>",  # longer than can be stored
    ],
    ids=["not-utf8", "too-long"],
)
def test_a_sender_that_could_never_be_stored_is_refused_permanently(
    server: InboundServer, engine: sa.Engine, command: bytes
) -> None:
    with smtp_client(server) as client:
        client.send(command + b"\r\n")
        code, text = client.getreply()
        assert (code, text[:6]) == (553, b"5.1.7 ")
        assert_session_in_step(client)
        # The session goes on: a proper sender is still taken.
        *_, data_reply = send(client, SENDER, [REPLY], REPLY_MESSAGE)
        assert data_reply is not None and data_reply[0] == 250
    assert len(stored(engine)) == 1


# -------------------------------------------------------------------- size


def test_ehlo_advertises_the_size_limit_and_larger_messages_get_552(
    server: InboundServer, engine: sa.Engine
) -> None:
    headers = b"Subject: big\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    at_limit = headers + line * ((MAX_BYTES - len(headers) - 3) // len(line))
    at_limit += b"y" * (MAX_BYTES - len(at_limit) - 2) + b"\r\n"
    assert len(at_limit) == MAX_BYTES
    over = at_limit + line

    with smtp_client(server) as client:
        assert client.esmtp_features["size"] == str(MAX_BYTES)
        # Declared in MAIL FROM (smtplib sends SIZE= when it is advertised).
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(SENDER, [REPLY], over)
        assert refused.value.smtp_code == 552
        client.rset()
        # Not declared: refused at the end of the data.
        mail_code, rcpt_codes, data_reply = send(client, SENDER, [REPLY], over)
        assert (mail_code, rcpt_codes) == (250, [250])
        assert data_reply is not None and data_reply[0] == 552
        assert_session_in_step(client)
        assert stored(engine) == []
        # Exactly at the limit is fine.
        mail_code, rcpt_codes, data_reply = send(client, SENDER, [REPLY], at_limit)
        assert data_reply is not None and data_reply[0] == 250
    [message] = stored(engine)
    assert message.raw == at_limit
    assert_queued_once(engine, [message])


# ------------------------------------------------------------- line endings


BARE_LINE_ENDS = [
    b"Subject: lf only\n\nRXA: complete\n",
    b"Subject: one bare lf\r\n\r\nRXA: complete\nALL: done\r\n",
    b"Subject: one bare cr\r\n\r\nRXA: com\rplete\r\n",
    b"Subject: cr cr lf\r\n\r\nRXA: complete\r\r\n",
]


def test_a_message_with_a_bare_cr_or_lf_is_refused_550_and_not_stored(
    server: InboundServer, engine: sa.Engine
) -> None:
    with smtp_client(server) as client:
        for data in BARE_LINE_ENDS:
            mail_code, rcpt_codes, data_reply = send(client, SENDER, [REPLY], data)
            assert (mail_code, rcpt_codes) == (250, [250])
            assert data_reply is not None, data
            assert (data_reply[0], data_reply[1][:6]) == (550, b"5.6.0 "), data
            assert b"bare CR or LF" in data_reply[1]
            assert_session_in_step(client)
    assert stored(engine) == []
    assert jobs(engine) == []


@pytest.mark.parametrize(
    "fake_end", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"], ids=repr
)
def test_a_smuggled_second_message_is_neither_run_nor_stored(
    server: InboundServer, engine: sa.Engine, fake_end: bytes
) -> None:
    smuggled = (
        b"Subject: looks harmless\r\n\r\nRXA: complete"
        + fake_end
        + b"MAIL FROM:<ceo@trust.example.org>\r\n"
        + b"RCPT TO:<"
        + REPLY.encode()
        + b">\r\nDATA\r\nFrom: ceo@trust.example.org\r\nSubject: smuggled\r\n\r\nALL: n/a\r\n"
    )
    with smtp_client(server) as client:
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(REPLY)[0] == 250
        code, _ = client.docmd("DATA")
        assert code == 354
        client.send(smuggled + b"\r\n.\r\n")
        code, text = client.getreply()
        assert (code, text[:6]) == (550, b"5.6.0 ")
        # Exactly one reply came for all of it: the smuggled commands were data.
        assert_session_in_step(client)
    assert stored(engine) == []


# ------------------------------------------------------ whatever comes in


def junk_lines(seed: int, count: int) -> bytes:
    """Random bytes (NUL, 8-bit, leading dots) in CRLF-ended lines."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        raw = rng.randbytes(rng.randint(0, 200)).replace(b"\r", b"").replace(b"\n", b"")
        lines.append(raw + b"\r\n")
    lines.insert(3, b".\r\n")  # a lone dot inside the data, stuffed by the client
    lines.insert(5, b"..\r\n")
    return b"".join(lines)


ANYTHING = {
    "random-bytes": junk_lines(seed=4720, count=60),
    "no-headers": b"just some words, no header at all\r\n",
    "header-injection": (
        b"From: pat.jones@trust.example.org\r\n"
        b"Subject: Re: alert\r\n"
        b"Bcc: everyone@example.org\r\n"
        b"X-Note: =?utf-8?q?x=0D=0ABcc:_evil@example.org?=\r\n"
        b"Subject: a second subject%0d%0aBcc: more@example.org\r\n"
        b"\r\n"
        b"RXA: complete\r\n"
        b".a line starting with a dot\r\n"
        b"From: not a header, in the body\r\n"
    ),
    "utf8-and-8bit": "Subject: Réponse ✓\r\n\r\nRXA: terminé\r\n".encode() + b"\xff\xfe\r\n",
}


def test_anything_with_proper_line_ends_is_stored_verbatim_for_processing_to_judge(
    server: InboundServer, engine: sa.Engine
) -> None:
    with smtp_client(server) as client:
        for name, data in ANYTHING.items():
            *_, data_reply = send(client, SENDER, [REPLY], data)
            assert data_reply is not None and data_reply[0] == 250, name
    messages = stored(engine)
    assert [m.raw for m in messages] == list(ANYTHING.values())
    assert_queued_once(engine, messages)


# -------------------------------------------------------------------- LMTP


def test_lmtp_answers_each_accepted_recipient_after_data(
    start_server: Callable[..., InboundServer], engine: sa.Engine
) -> None:
    server = start_server(lmtp=True)
    with lmtp_client(server) as client:
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(REPLY)[0] == 250
        assert client.rcpt(f"nobody@{DOMAIN}")[0] == 550
        assert client.rcpt(BOUNCE)[0] == 250
        first = client.data(REPLY_MESSAGE)
        second = client.getreply()
        assert [first[0], second[0]] == [250, 250]
        assert first[1].startswith(b"2.0.0 ") and second[1].startswith(b"2.0.0 ")
        assert_session_in_step(client)
    [message] = stored(engine)
    assert message.source == "lmtp"
    assert message.raw == REPLY_MESSAGE
    assert message.envelope_to == [REPLY, BOUNCE]
    assert_queued_once(engine, [message])


def test_lmtp_refusals_after_data_come_once_per_recipient_too(
    start_server: Callable[..., InboundServer], engine: sa.Engine
) -> None:
    server = start_server(lmtp=True)
    too_big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * (MAX_BYTES // 80 + 10)
    with lmtp_client(server) as client:
        for data, code in [(too_big, 552), (BARE_LINE_ENDS[1], 550)]:
            assert client.mail(SENDER)[0] == 250
            assert client.rcpt(REPLY)[0] == 250
            assert client.rcpt(BOUNCE)[0] == 250
            assert [client.data(data)[0], client.getreply()[0]] == [code, code]
            assert_session_in_step(client)
        # Refusals of the DATA command itself stay single.
        assert client.mail(SENDER)[0] == 250
        assert client.docmd("DATA")[0] == 503
        assert_session_in_step(client)
    assert stored(engine) == []


def test_lhlo_is_the_lmtp_greeting(start_server: Callable[..., InboundServer]) -> None:
    server = start_server(lmtp=True)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        assert client.docmd("EHLO", "client.example.org")[0] == 500
        code, text = client.docmd("LHLO", "client.example.org")
        assert code == 250
        assert f"SIZE {MAX_BYTES}".encode() in text


# ---------------------------------------------------------- database failure


@contextmanager
def commits_refused(engine: sa.Engine) -> Iterator[None]:
    """Make every commit that inserted an inbound message fail, at COMMIT
    itself: a deferred constraint (PostgreSQL), a deferred foreign key
    (SQLite)."""
    if engine.dialect.name == "postgresql":
        install = [
            "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused at commit (test)'; END $$",
            "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON inbound_messages "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()",
        ]
        remove = [
            "DROP TRIGGER refuse_commit ON inbound_messages",
            "DROP FUNCTION refuse_commit()",
        ]
    else:
        install = [
            "CREATE TABLE refuse_commit_parent (id INTEGER PRIMARY KEY)",
            "ALTER TABLE inbound_messages ADD COLUMN refuse_commit INTEGER "
            "REFERENCES refuse_commit_parent (id) DEFERRABLE INITIALLY DEFERRED",
            "CREATE TRIGGER refuse_commit AFTER INSERT ON inbound_messages BEGIN "
            "UPDATE inbound_messages SET refuse_commit = 1 WHERE id = NEW.id; END",
        ]
        remove = ["DROP TRIGGER refuse_commit"]
    with engine.begin() as conn:
        for statement in install:
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with engine.begin() as conn:
            for statement in remove:
                conn.exec_driver_sql(statement)


def test_the_trap_really_fails_at_commit(engine: sa.Engine) -> None:
    """(The next test relies on it: the insert and flush succeed, the
    commit does not.)"""
    flushed = False
    # As the server does it: the block commits on the way out.
    with (
        commits_refused(engine),
        pytest.raises(sa.exc.DatabaseError),
        make_sessionmaker(engine).begin() as session,
    ):
        store_inbound_message(
            session, b"x\r\n", source="smtp", envelope_from=None, envelope_to=[], now=utc_now()
        )
        session.flush()
        flushed = True
    assert flushed
    assert stored(engine) == []


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_a_failed_commit_answers_451_and_the_retry_is_stored_once(
    start_server: Callable[..., InboundServer], engine: sa.Engine, lmtp: bool
) -> None:
    server = start_server(lmtp=lmtp)
    recipients = [REPLY, BOUNCE] if lmtp else [REPLY]
    with (lmtp_client if lmtp else smtp_client)(server) as client:
        with commits_refused(engine):
            assert client.mail(SENDER)[0] == 250
            assert [client.rcpt(r)[0] for r in recipients] == [250] * len(recipients)
            replies = [client.data(REPLY_MESSAGE)]
            replies += [client.getreply() for _ in recipients[1:]]
            assert [(code, text[:6]) for code, text in replies] == [(451, b"4.3.0 ")] * len(
                recipients
            )
            assert_session_in_step(client)
            assert stored(engine) == []
            assert jobs(engine) == []
        # The sender tries again later, on the same connection and server.
        assert client.mail(SENDER)[0] == 250
        assert [client.rcpt(r)[0] for r in recipients] == [250] * len(recipients)
        replies = [client.data(REPLY_MESSAGE)]
        replies += [client.getreply() for _ in recipients[1:]]
        assert [code for code, _ in replies] == [250] * len(recipients)
    [message] = stored(engine)
    assert message.raw == REPLY_MESSAGE
    assert message.envelope_to == recipients
    assert_queued_once(engine, [message])


def test_an_unreachable_database_answers_451(
    start_server: Callable[..., InboundServer],
    server: InboundServer,
    engine: sa.Engine,
    backend: str,
    tmp_path: Path,
) -> None:
    if backend == "postgresql":
        down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    else:
        (tmp_path / "a-directory").mkdir()
        down = f"sqlite:///{tmp_path / 'a-directory'}"
    broken = start_server(url=down)
    broken_lmtp = start_server(url=down, lmtp=True)

    with smtp_client(broken) as client:
        # A reply key cannot be looked up: try later.
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt(REPLY)
        assert (code, text[:6]) == (451, b"4.3.0 ")
        client.rset()
        # A service address needs no look-up, but the message cannot be stored.
        mail_code, rcpt_codes, data_reply = send(client, SENDER, [ALERTS], REPLY_MESSAGE)
        assert (mail_code, rcpt_codes) == (250, [250])
        assert data_reply is not None and (data_reply[0], data_reply[1][:6]) == (451, b"4.3.0 ")
        assert_session_in_step(client)
    with lmtp_client(broken_lmtp) as client:
        assert client.mail(SENDER)[0] == 250
        assert [client.rcpt(REPLY)[0], client.rcpt(BOUNCE)[0]] == [451, 451]
        assert [client.rcpt(ALERTS)[0], client.rcpt(POSTMASTER)[0]] == [250, 250]
        assert [client.data(REPLY_MESSAGE)[0], client.getreply()[0]] == [451, 451]
        assert_session_in_step(client)

    # Later, the database is there (here: the server on the working one).
    with smtp_client(server) as client:
        mail_code, rcpt_codes, data_reply = send(client, SENDER, [REPLY], REPLY_MESSAGE)
        assert data_reply is not None and data_reply[0] == 250
    assert [m.raw for m in stored(engine)] == [REPLY_MESSAGE]


# -------------------------------------------------------- the command line


def start_smtpd(database_url: str, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
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
            [sys.executable, "-m", "mailflow", "smtpd", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )


def wait_for_port(process: subprocess.Popen[bytes], port: int, tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    log = (tmp_path / "smtpd.log").read_text(errors="replace")
    raise AssertionError(f"mailflow smtpd did not listen on {port}:\n{log}")


@pytest.mark.slow
def test_sigkill_right_after_250_loses_nothing_and_a_restart_takes_mail_again(
    database_url: str, engine: sa.Engine, tmp_path: Path, known_keys: None
) -> None:
    port = free_port()
    process = start_smtpd(database_url, port, tmp_path)
    try:
        wait_for_port(process, port, tmp_path)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            assert client.mail(SENDER)[0] == 250
            assert client.rcpt(REPLY)[0] == 250
            code, _ = client.data(REPLY_MESSAGE)
            process.send_signal(signal.SIGKILL)
            assert code == 250
    finally:
        process.kill()
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    [message] = stored(engine)
    assert message.raw == REPLY_MESSAGE
    assert message.envelope_to == [REPLY]
    assert_queued_once(engine, [message])

    again = start_smtpd(database_url, port, tmp_path)
    try:
        wait_for_port(again, port, tmp_path)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            assert client.sendmail("", [BOUNCE], b"Subject: bounce\r\n\r\n5.1.1\r\n") == {}
    finally:
        again.send_signal(signal.SIGTERM)
        code = again.wait(timeout=30)
    log = (tmp_path / "smtpd.log").read_text(errors="replace")
    assert code == 0, log
    assert f"listening on 127.0.0.1:{port}" in log
    assert [m.envelope_to for m in stored(engine)] == [[REPLY], [BOUNCE]]


@pytest.mark.slow
def test_the_command_says_when_it_cannot_listen(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_smtpd(database_url, port, tmp_path)
        assert process.wait(timeout=30) == 2
    log = (tmp_path / "smtpd.log").read_text(errors="replace")
    assert f"mailflow: cannot listen on 127.0.0.1:{port}" in log


def test_help_explains_the_command_and_a_bad_listen_address_is_refused() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["smtpd", "--help"])
    assert shown.exit_code == 0
    for words in ("reply+KEY@", "250 only once", "451", "--lmtp", "--listen HOST:PORT"):
        assert words in " ".join(shown.output.split()), words
    refused = runner.invoke(cli, ["smtpd", "--listen", "nowhere"])
    assert refused.exit_code == 2
    assert "expected HOST:PORT" in refused.output

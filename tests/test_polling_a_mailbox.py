"""The IMAP poller against a real Dovecot: every message is stored once,
raw, before it is flagged, moved or deleted; UIDVALIDITY changes, failed
commits, IDLE, wrong passwords and a SIGKILL in the middle of a mailbox."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from imapclient import IMAPClient
from sqlalchemy.orm import Session

from mailflow.config import Settings, parse_imap_url
from mailflow.core.models import ImapCheckpoint, InboundMessage, Job
from mailflow.core.runtime import Runtime
from mailflow.gateway import imap as imap_edge
from mailflow.gateway.imap import ImapPoller, envelope_recipients
from mailflow.gateway.inbound_messages import PROCESS_INBOUND
from tests.support.dovecot import DovecotAccount
from tests.support.environment import SECRET_KEY
from tests.support.waiting import wait_until


def reply(n: int, *, extra_headers: str = "") -> bytes:
    return (
        f"{extra_headers}"
        f"From: Analyst {n} <analyst{n}@example.test>\r\n"
        f"To: alerts@alerts.test\r\n"
        f"Subject: Re: CC-4720 ({n})\r\n"
        f"Message-ID: <reply-{n}@example.test>\r\n"
        f"\r\n"
        f"RXA: complete\r\n"
        f"\r\n"
        f"> the alert {n}\r\n"
    ).encode()


def key_of(dovecot: DovecotAccount, mailbox: str = "INBOX") -> str:
    return f"{dovecot.user}@{dovecot.host}:{dovecot.port}/{mailbox}"


def stored(engine: sa.Engine) -> list[InboundMessage]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(InboundMessage).order_by(InboundMessage.id)))


def stored_count(engine: sa.Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) or 0)


def checkpoint(engine: sa.Engine) -> ImapCheckpoint | None:
    with Session(engine) as session:
        return session.scalar(sa.select(ImapCheckpoint))


def all_flags(dovecot: DovecotAccount, mailbox: str = "INBOX") -> dict[int, set[bytes]]:
    """Every message's flags, read on one connection of our own."""
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as client:
        client.login(dovecot.user, dovecot.password)
        client.select_folder(mailbox, readonly=True)
        uids = client.search("ALL")
        return {uid: set(flags) for uid, flags in client.get_flags(uids).items()}


def no_origin_twice(messages: list[InboundMessage]) -> None:
    origins = Counter((m.imap_mailbox, m.imap_uidvalidity, m.imap_uid) for m in messages)
    assert max(origins.values(), default=1) == 1, origins


@pytest.fixture
def make_poller(
    settings_for: Callable[..., Settings], database_url: str, dovecot: DovecotAccount
) -> Iterator[Callable[..., ImapPoller]]:
    made: list[tuple[ImapPoller, Runtime]] = []

    def make(after: str = "seen", **overrides: Any) -> ImapPoller:
        values: dict[str, Any] = {"imap_url": parse_imap_url(dovecot.url()), "imap_poll_seconds": 1}
        values.update(overrides)
        settings = settings_for(database_url, imap_after=after, **values)
        runtime = Runtime(settings)
        poller = ImapPoller(runtime)
        made.append((poller, runtime))
        return poller

    yield make
    for poller, runtime in made:
        poller.close()
        runtime.close()


# ------------------------------------------------------------ plain values


def test_url_gives_decoded_credentials_default_mailbox_and_a_key_without_password() -> None:
    target = parse_imap_url("imap://alerts%40example.org:p%40ss%3Aw%2Fd@Mail.Example.org:1143")
    assert (target.username, target.password) == ("alerts@example.org", "p@ss:w/d")
    assert (target.host, target.port, target.use_tls) == ("mail.example.org", 1143, False)
    assert target.mailbox == "INBOX"
    assert target.key == "alerts@example.org@mail.example.org:1143/INBOX"
    assert "p@ss" not in repr(target)

    tls = parse_imap_url("imaps://u:p@imap.example.org/Replies%20In")
    assert (tls.port, tls.use_tls, tls.mailbox) == (993, True, "Replies In")
    assert tls.key == "u@imap.example.org:993/Replies In"


def test_envelope_recipients_in_order_of_priority_from_the_header_block() -> None:
    raw = (
        b"Cc: Dee <dee@example.test>, eve@example.test\r\n"
        b"To: Carol <carol@example.test>\r\n"
        b"X-Original-To: alerts@alerts.test\r\n"
        b"Delivered-To: reply+KEY1@alerts.test\r\n"
        b"Delivered-To: reply+KEY2@alerts.test\r\n"
        b"\r\n"
        b"To: not-a-header@example.test\r\n"
    )
    assert envelope_recipients(raw) == [
        "reply+KEY1@alerts.test",
        "reply+KEY2@alerts.test",
        "alerts@alerts.test",
        "carol@example.test",
        "dee@example.test",
        "eve@example.test",
    ]
    # Folded headers, a repeat, and garbage never fail.
    folded = b"To: a@example.test,\r\n b@example.test\r\nCc: a@example.test\r\n"
    assert envelope_recipients(folded) == ["a@example.test", "b@example.test"]
    assert envelope_recipients(b"\xff\xfe\x00 no headers at all") == []


# ------------------------------------------------------------------ passes


def test_each_message_is_stored_once_raw_with_its_origin_and_a_job(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    raws = [reply(n) for n in range(3)]
    uids = [dovecot.append(raw) for raw in raws]
    uidvalidity = dovecot.uidvalidity()
    poller = make_poller("seen")

    result = poller.poll_once()

    assert (result.stored, result.finished) == (3, 3)
    messages = stored(engine)
    assert [m.raw for m in messages] == raws
    assert [(m.imap_mailbox, m.imap_uidvalidity, m.imap_uid) for m in messages] == [
        (key_of(dovecot), uidvalidity, uid) for uid in uids
    ]
    assert all(m.source == "imap" and m.envelope_from is None for m in messages)
    assert all(m.envelope_to == ["alerts@alerts.test"] for m in messages)
    assert [m.message_id_header for m in messages] == [
        f"<reply-{n}@example.test>" for n in range(3)
    ]
    with Session(engine) as session:
        jobs = list(session.scalars(sa.select(Job).order_by(Job.id)))
    assert [(j.kind, j.payload) for j in jobs] == [
        (PROCESS_INBOUND, {"inbound_message_id": m.id}) for m in messages
    ]
    assert all(b"\\Seen" in flags for flags in all_flags(dovecot).values())
    cp = checkpoint(engine)
    assert cp is not None
    assert (cp.mailbox, cp.uidvalidity, cp.last_uid) == (key_of(dovecot), uidvalidity, uids[-1])

    # A second pass, on the same connection, finds nothing new.
    again = poller.poll_once()
    assert (again.stored, again.finished) == (0, 0)
    assert stored_count(engine) == 3

    # A message arriving later is the only one stored by the next pass.
    late = dovecot.append(reply(9))
    assert poller.poll_once().stored == 1
    assert [m.imap_uid for m in stored(engine)] == [*uids, late]


def test_an_empty_mailbox_stores_nothing_and_a_pass_finds_the_first_message(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    poller = make_poller("seen")
    assert poller.poll_once().stored == 0
    # UID SEARCH UID 1:* on an empty mailbox, then UID 2:* with one message
    # of UID 1 (which the server reports although it is below 2).
    uid = dovecot.append(reply(1))
    assert poller.poll_once().stored == 1
    again = poller.poll_once()
    # Neither stored nor flagged again.
    assert (again.stored, again.finished) == (0, 0)
    assert [m.imap_uid for m in stored(engine)] == [uid]


def test_move_puts_stored_messages_in_the_folder_creating_it(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    raws = [reply(n) for n in range(3)]
    for raw in raws:
        dovecot.append(raw)
    poller = make_poller("move:Processed")

    assert poller.poll_once().stored == 3

    assert dovecot.uids() == []
    assert len(dovecot.uids("Processed")) == 3
    assert [m.raw for m in stored(engine)] == raws
    # Nothing read twice, and new mail still moves.
    dovecot.append(reply(7))
    assert poller.poll_once().stored == 1
    assert dovecot.uids() == []
    assert len(dovecot.uids("Processed")) == 4
    assert stored_count(engine) == 4


def test_delete_expunges_stored_messages(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    for n in range(2):
        dovecot.append(reply(n))
    poller = make_poller("delete")

    assert poller.poll_once().stored == 2

    assert dovecot.uids() == []
    assert stored_count(engine) == 2
    assert poller.poll_once().stored == 0


def test_delivered_to_comes_first_and_malformed_bytes_are_stored_as_they_are(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    addressed = reply(
        1,
        extra_headers="Delivered-To: reply+Ab3dE5gH@alerts.test\r\n"
        "Cc: Someone <someone@example.test>\r\n",
    )
    malformed = (
        b"To: \xff\xfe broken <<< @@\r\n"
        b"Subject: \xe9t\xe9 sans encodage\r\n"
        b"this is not a header\r\n"
        b"\r\n"
        b"\xde\xad\xbe\xef body\r\n"
    )
    dovecot.append(addressed)
    dovecot.append(malformed)

    assert make_poller("seen").poll_once().stored == 2

    first, second = stored(engine)
    assert first.envelope_to == [
        "reply+Ab3dE5gH@alerts.test",
        "alerts@alerts.test",
        "someone@example.test",
    ]
    assert first.raw == addressed
    assert second.raw == malformed
    assert isinstance(second.envelope_to, list)


# -------------------------------------------------------------- UIDVALIDITY


def test_a_new_uidvalidity_reads_the_mailbox_again_once(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    uids = [dovecot.append(reply(n)) for n in range(3)]
    old = dovecot.uidvalidity()
    poller = make_poller("seen")
    assert poller.poll_once().stored == 3

    new = dovecot.change_uidvalidity()
    assert poller.poll_once().stored == 3
    assert poller.poll_once().stored == 0

    messages = stored(engine)
    no_origin_twice(messages)
    by_validity = Counter(m.imap_uidvalidity for m in messages)
    assert by_validity == {old: 3, new: 3}
    assert sorted(m.imap_uid or 0 for m in messages if m.imap_uidvalidity == new) == uids
    cp = checkpoint(engine)
    assert cp is not None
    assert (cp.uidvalidity, cp.last_uid) == (new, uids[-1])

    # Mail after the change is read from the new checkpoint on.
    later = dovecot.append(reply(5))
    assert poller.poll_once().stored == 1
    cp = checkpoint(engine)
    assert cp is not None
    assert (cp.uidvalidity, cp.last_uid) == (new, later)


# ------------------------------------------------------- failure and restart


def test_a_failed_commit_leaves_the_message_unflagged_and_the_next_pass_stores_it_once(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    uid = dovecot.append(reply(1))
    poller = make_poller("seen")
    # The message row is written, but its job cannot be: the transaction
    # fails at commit and takes the message with it.
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE jobs RENAME TO jobs_away")
    try:
        with pytest.raises(sa.exc.DBAPIError):
            poller.poll_once()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE jobs_away RENAME TO jobs")

    assert stored_count(engine) == 0
    # Fetched (BODY.PEEK[]) but not flagged.
    assert all_flags(dovecot)[uid] == set()

    assert poller.poll_once().stored == 1
    assert [m.imap_uid for m in stored(engine)] == [uid]
    assert b"\\Seen" in all_flags(dovecot)[uid]
    assert poller.poll_once().stored == 0


@pytest.mark.parametrize("after", ["seen", "move:Processed", "delete"])
def test_a_stop_between_commit_and_action_is_finished_by_the_next_pass(
    make_poller: Callable[..., ImapPoller],
    dovecot: DovecotAccount,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    after: str,
) -> None:
    uids = [dovecot.append(reply(n)) for n in range(2)]
    crashing = make_poller(after)

    def die(*_args: object) -> None:
        raise ConnectionResetError("gone between commit and flag")

    monkeypatch.setattr(crashing, "_apply_after", die)
    with pytest.raises(ConnectionResetError):
        crashing.poll_once()
    # The first message is stored and past the checkpoint, but untouched.
    assert [m.imap_uid for m in stored(engine)] == uids[:1]
    assert dovecot.uids() == uids
    assert all_flags(dovecot)[uids[0]] == set()

    restarted = make_poller(after)
    result = restarted.poll_once()

    assert (result.stored, result.finished) == (1, 2)
    messages = stored(engine)
    assert [m.imap_uid for m in messages] == uids
    no_origin_twice(messages)
    if after == "seen":
        assert all(b"\\Seen" in f for f in all_flags(dovecot).values())
    else:
        assert dovecot.uids() == []
    if after.startswith("move:"):
        assert len(dovecot.uids("Processed")) == 2
    assert restarted.poll_once().finished == 0


@pytest.mark.parametrize("after", ["seen", "move:Processed", "delete"])
def test_a_message_over_the_size_limit_is_never_stored_but_flagged_and_left_in_the_mailbox(
    make_poller: Callable[..., ImapPoller],
    dovecot: DovecotAccount,
    engine: sa.Engine,
    caplog: pytest.LogCaptureFixture,
    after: str,
) -> None:
    limit = 4096
    huge = reply(2, extra_headers="X-Padding: big\r\n") + b"x" * 78 * 200 + b"\r\n"
    assert len(huge) > limit
    small = [reply(1), reply(3)]
    uids = [dovecot.append(small[0]), dovecot.append(huge), dovecot.append(small[1])]
    poller = make_poller(after, inbound_max_bytes=limit)

    with caplog.at_level(logging.WARNING, logger="mailflow.gateway.imap"):
        result = poller.poll_once()
        # Later passes find it again (below the checkpoint) and let it be.
        again = poller.poll_once()

    assert (result.stored, result.set_aside) == (2, 1)
    assert [m.raw for m in stored(engine)] == small
    assert uids[1] in dovecot.uids()
    assert {b"\\Flagged", b"\\Seen"} <= all_flags(dovecot)[uids[1]]
    cp = checkpoint(engine)
    assert cp is not None and cp.last_uid == uids[2]
    assert (again.stored, again.finished, again.set_aside) == (0, 0, 0)
    [warning] = [r for r in caplog.records if "MAILFLOW_INBOUND_MAX_BYTES" in r.getMessage()]
    assert f"UID {uids[1]} " in warning.getMessage()
    assert stored_count(engine) == 2


@pytest.fixture
def without_move_uidplus_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller's connections hide MOVE, UIDPLUS and IDLE, as an older
    server would (imapclient itself then refuses MOVE, UID EXPUNGE, IDLE)."""
    hidden = {"MOVE", "UIDPLUS", "IDLE"}
    original = imap_edge.IMAPClient.has_capability

    def has_capability(self: IMAPClient, capability: str) -> bool:
        return capability.upper() not in hidden and bool(original(self, capability))

    monkeypatch.setattr(imap_edge.IMAPClient, "has_capability", has_capability)


@pytest.mark.usefixtures("without_move_uidplus_idle")
@pytest.mark.parametrize("after", ["move:Processed", "delete"])
def test_without_move_or_uidplus_copy_and_expunge_do_it(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine, after: str
) -> None:
    raws = [reply(n) for n in range(3)]
    for raw in raws:
        dovecot.append(raw)
    poller = make_poller(after)

    assert poller.poll_once().stored == 3

    assert dovecot.uids() == []
    if after.startswith("move:"):
        assert len(dovecot.uids("Processed")) == 3
        assert all(b"\\Deleted" not in f for f in all_flags(dovecot, "Processed").values())
    assert [m.raw for m in stored(engine)] == raws
    assert poller.poll_once().stored == 0


@pytest.mark.usefixtures("without_move_uidplus_idle")
def test_without_idle_the_poller_polls_and_stops_promptly(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    poller = make_poller("seen", imap_poll_seconds=1)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: checkpoint(engine) is not None, timeout=10, what="the first pass")
        uid = dovecot.append(reply(1))
        wait_until(lambda: stored_count(engine) == 1, timeout=5, what="the message, polled")
    finally:
        started = time.monotonic()
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    assert [m.imap_uid for m in stored(engine)] == [uid]


def test_idle_stores_new_mail_at_once_and_stop_is_prompt(
    make_poller: Callable[..., ImapPoller], dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    # A long poll interval: only IDLE can bring the message in quickly.
    poller = make_poller("seen", imap_poll_seconds=60)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: checkpoint(engine) is not None, timeout=10, what="the first pass")
        time.sleep(0.5)  # idling by now
        uid = dovecot.append(reply(1))
        wait_until(lambda: stored_count(engine) == 1, timeout=5, what="the message, via IDLE")
        wait_until(lambda: b"\\Seen" in all_flags(dovecot)[uid], timeout=5, what="the \\Seen flag")
    finally:
        started = time.monotonic()
        stop.set()
        thread.join(timeout=10)
        stopped_in = time.monotonic() - started
    assert not thread.is_alive()
    assert stopped_in < 2.0
    assert [m.imap_uid for m in stored(engine)] == [uid]


def test_a_wrong_password_is_logged_without_it_and_retried(
    make_poller: Callable[..., ImapPoller],
    dovecot: DovecotAccount,
    engine: sa.Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dovecot.append(reply(1))
    wrong = "Wr0ng-" + dovecot.password
    url = dovecot.url().replace(f":{dovecot.password}@", f":{wrong}@")
    poller = make_poller("seen", imap_url=parse_imap_url(url))
    caplog.set_level(logging.DEBUG)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    try:

        def refusals() -> int:
            return sum("login to" in r.getMessage() for r in caplog.records)

        # Tried at once, then again after 1 s.
        wait_until(lambda: refusals() >= 2, timeout=10, what="two refused logins")
    finally:
        started = time.monotonic()
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    refused = [r for r in caplog.records if "login to" in r.getMessage()]
    assert all(r.levelno == logging.WARNING for r in refused)
    assert "check MAILFLOW_IMAP_URL" in refused[0].getMessage()
    assert wrong not in caplog.text
    assert stored_count(engine) == 0


# ------------------------------------------------------- the command line


def imap_env(database_url: str, imap_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env.update(
        MAILFLOW_DATABASE_URL=database_url,
        MAILFLOW_SECRET_KEY=SECRET_KEY,
        MAILFLOW_IMAP_AFTER="seen",
        MAILFLOW_IMAP_POLL_SECONDS="1",
        **extra,
    )
    if imap_url is not None:
        env["MAILFLOW_IMAP_URL"] = imap_url
    return env


def run_imap_once(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailflow", "imap", "--once"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_imap_once_stores_and_exits(
    database_url: str, dovecot: DovecotAccount, engine: sa.Engine, tmp_path: Path
) -> None:
    for n in range(2):
        dovecot.append(reply(n))

    done = run_imap_once(imap_env(database_url, dovecot.url()), tmp_path)

    assert done.returncode == 0, done.stderr
    assert "2 new messages stored" in done.stdout
    assert stored_count(engine) == 2
    assert dovecot.password not in done.stdout + done.stderr


def test_imap_without_a_url_names_the_setting(database_url: str, tmp_path: Path) -> None:
    done = run_imap_once(imap_env(database_url, None), tmp_path)

    assert done.returncode == 2
    assert "MAILFLOW_IMAP_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_imap_once_with_a_wrong_password_fails_clearly(
    database_url: str, dovecot: DovecotAccount, engine: sa.Engine, tmp_path: Path
) -> None:
    dovecot.append(reply(1))
    wrong = "Wr0ng-" + dovecot.password
    url = dovecot.url().replace(f":{dovecot.password}@", f":{wrong}@")

    done = run_imap_once(imap_env(database_url, url), tmp_path)

    assert done.returncode == 1
    assert "login" in done.stderr and "refused" in done.stderr
    assert "MAILFLOW_IMAP_URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert wrong not in done.stdout + done.stderr
    assert stored_count(engine) == 0


# A hook the poller subprocess loads at start-up (through PYTHONPATH): each
# store waits a little, so a SIGKILL lands in the middle of the mailbox.
SLOW_STORE_HOOK = """\
import os, time
_delay = float(os.environ.get("MAILFLOW_TEST_STORE_DELAY") or 0)
if _delay:
    import mailflow.gateway.inbound_messages as _inbound
    _store = _inbound.store_inbound_message
    def _slow_store(*args, **kwargs):
        time.sleep(_delay)
        return _store(*args, **kwargs)
    _inbound.store_inbound_message = _slow_store
"""


def start_poller(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    with (tmp_path / "imap.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mailflow", "imap"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )


@pytest.mark.slow
def test_sigkill_mid_mailbox_then_restart_stores_everything_once_and_flags_it(
    database_url: str, dovecot: DovecotAccount, engine: sa.Engine, tmp_path: Path
) -> None:
    total = 30
    raws = {dovecot.append(reply(n)): reply(n) for n in range(total)}
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_STORE_HOOK)
    env = imap_env(database_url, dovecot.url())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))

    poller = start_poller({**env, "MAILFLOW_TEST_STORE_DELAY": "0.1"}, tmp_path)
    try:
        wait_until(lambda: stored_count(engine) >= 8, timeout=30, what="some messages stored")
    finally:
        poller.send_signal(signal.SIGKILL)
        poller.wait(timeout=10)
    before = stored_count(engine)
    assert 0 < before < total, "the kill did not land mid mailbox"

    restarted = start_poller(env, tmp_path)
    try:

        def all_seen() -> bool:
            flags = all_flags(dovecot)
            return len(flags) == total and all(b"\\Seen" in f for f in flags.values())

        wait_until(lambda: stored_count(engine) == total, timeout=30, what="every message")
        wait_until(all_seen, timeout=10, what="every message \\Seen")
    finally:
        restarted.send_signal(signal.SIGTERM)
        code = restarted.wait(timeout=10)
    log_text = (tmp_path / "imap.log").read_text(errors="replace")
    assert code == 0, log_text

    messages = stored(engine)
    no_origin_twice(messages)
    assert sorted(m.imap_uid or 0 for m in messages) == sorted(raws)
    assert all(m.raw == raws[m.imap_uid or 0] for m in messages)
    assert dovecot.password not in log_text

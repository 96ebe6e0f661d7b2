"""The `dovecot` fixture is a real IMAP server: a separate client
(imapclient) logs in, appends, flags, idles and sees what Dovecot does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.support.dovecot import DovecotAccount, DovecotServer


def message(n: int) -> bytes:
    return (
        f"From: alerts@alerts.test\r\n"
        f"To: analyst@example.test\r\n"
        f"Subject: reply {n}\r\n"
        f"Message-ID: <reply-{n}@example.test>\r\n"
        f"\r\n"
        f"Body of reply {n}.\r\n"
    ).encode()


@pytest.fixture
def client(dovecot: DovecotAccount) -> Iterator[IMAPClient]:
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as conn:
        conn.login(dovecot.user, dovecot.password)
        yield conn


def test_append_three_messages_gives_three_uids_and_a_uidvalidity(
    dovecot: DovecotAccount, client: IMAPClient
) -> None:
    for n in range(3):
        client.append("INBOX", message(n))

    selected = client.select_folder("INBOX")
    uids = client.search("ALL")

    assert selected[b"EXISTS"] == 3
    assert len(uids) == 3
    assert uids == sorted(uids)
    uidvalidity = selected[b"UIDVALIDITY"]
    assert uidvalidity > 0
    # The helpers, on connections of their own, see the same mailbox.
    assert dovecot.uids() == uids
    assert dovecot.uidvalidity() == uidvalidity
    subjects = [
        data[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()
        for _, data in sorted(client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items())
    ]
    assert subjects == [b"Subject: reply 0", b"Subject: reply 1", b"Subject: reply 2"]


def test_helper_append_returns_the_uid_the_server_gave(
    dovecot: DovecotAccount, client: IMAPClient
) -> None:
    first = dovecot.append(message(1))
    second = dovecot.append(message(2))

    client.select_folder("INBOX", readonly=True)
    assert client.search("ALL") == [first, second]
    assert second > first


def test_seen_flag_is_stored_by_the_server(dovecot: DovecotAccount, client: IMAPClient) -> None:
    uid = dovecot.append(message(1))
    assert "\\Seen" not in dovecot.flags(uid)

    client.select_folder("INBOX")
    client.add_flags([uid], [b"\\Seen"])

    assert b"\\Seen" in client.get_flags([uid])[uid]
    # Read back on another connection: the flag is on the server.
    assert "\\Seen" in dovecot.flags(uid)


def test_idle_is_advertised_and_reports_new_mail(
    dovecot: DovecotAccount, client: IMAPClient
) -> None:
    assert client.has_capability("IDLE")

    client.select_folder("INBOX")
    client.idle()
    try:
        uid = dovecot.append(message(1))
        responses: list[tuple[object, ...]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (1, b"EXISTS") not in responses:
            responses += client.idle_check(timeout=1)
    finally:
        client.idle_done()
    assert (1, b"EXISTS") in responses
    assert client.search("ALL") == [uid]


def test_uidvalidity_change_helper_changes_it(dovecot: DovecotAccount, client: IMAPClient) -> None:
    uids = [dovecot.append(message(n)) for n in range(2)]
    before = client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
    client.unselect_folder()

    after = dovecot.change_uidvalidity()

    assert after == before + 1
    assert client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] == after
    assert dovecot.uidvalidity() == after
    # The messages are still there.
    assert client.search("ALL") == uids
    # An explicit value is taken as given.
    client.unselect_folder()
    assert dovecot.change_uidvalidity(value=after + 1000) == after + 1000
    assert client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] == after + 1000


def test_wrong_password_is_refused(dovecot: DovecotAccount) -> None:
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as conn:
        with pytest.raises(LoginError):
            conn.login(dovecot.user, dovecot.password + "-wrong")
        with pytest.raises(LoginError):
            conn.login("nobody-" + dovecot.user, dovecot.password)


def test_each_test_gets_a_new_user_with_an_empty_inbox(dovecot: DovecotAccount) -> None:
    assert dovecot.uids() == []
    dovecot.append(message(1))
    assert len(dovecot.uids()) == 1


def test_url_names_the_server_user_and_mailbox(dovecot: DovecotAccount) -> None:
    url = urlsplit(dovecot.url())

    assert url.scheme == "imap"
    assert (url.hostname, url.port) == ("127.0.0.1", dovecot.port)
    assert (url.username, url.password) == (dovecot.user, dovecot.password)
    assert url.path == "/INBOX"
    with IMAPClient(url.hostname, port=url.port, ssl=False, timeout=10) as conn:
        conn.login(unquote(url.username or ""), unquote(url.password or ""))
        assert conn.select_folder(url.path.lstrip("/"))[b"EXISTS"] == 0


def test_password_change_is_picked_up(dovecot: DovecotAccount) -> None:
    dovecot.uids()  # Dovecot has read this user's passwd file.
    dovecot.server.add_user(dovecot.user, "changed-password")

    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as conn:
        with pytest.raises(LoginError):
            conn.login(dovecot.user, dovecot.password)
        conn.login(dovecot.user, "changed-password")


def test_restart_keeps_the_mail(dovecot: DovecotAccount, dovecot_server: DovecotServer) -> None:
    uid = dovecot.append(message(1))
    uidvalidity = dovecot.uidvalidity()
    port = dovecot_server.port

    dovecot_server.restart()

    assert dovecot_server.port == port
    assert dovecot.uids() == [uid]
    assert dovecot.uidvalidity() == uidvalidity

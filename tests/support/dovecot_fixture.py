"""Pytest fixtures for a real Dovecot IMAP server.

`dovecot_server` is one server for the whole session; `dovecot` gives each
test a user of its own on it (a fresh name, an empty INBOX), so tests stay
apart without paying for a server each. Without the `dovecot` binary the
tests fail when CI=true and are skipped otherwise.

Import both into a conftest.py to use them.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator

import pytest

from tests.support.dovecot import DovecotAccount, DovecotServer, dovecot_binary

_user_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    if dovecot_binary() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dovecot is required in CI but is not installed")
        pytest.skip("dovecot is not installed")
    with DovecotServer() as server:
        yield server


@pytest.fixture
def dovecot(dovecot_server: DovecotServer) -> DovecotAccount:
    """A new user, with an empty INBOX, on the session's Dovecot server."""
    if not dovecot_server.running:
        # A test that stopped or broke the server must not break the next.
        dovecot_server.restart()
    user = f"user{next(_user_numbers)}-{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    dovecot_server.add_user(user, password)
    return DovecotAccount(dovecot_server, user, password)

"""On the embedded defaults the database and the outgoing mail live in
``var/``: another local user on the machine must not be able to read
either, since a welcome email there carries a working enrolment link."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailflow.cli.main import cli
from mailflow.config import load_settings
from mailflow.core.models import OutgoingEmail, OutgoingState
from mailflow.core.runtime import Runtime
from mailflow.workers.queue import QueueWorker
from tests.support.environment import SECRET_KEY
from tests.support.waiting import wait_until


@pytest.fixture
def lenient_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh folder as the working directory, under the usual umask
    (files 0644, folders 0755 unless mailflow says otherwise)."""
    monkeypatch.chdir(tmp_path)
    previous = os.umask(0o022)
    try:
        yield tmp_path
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_welcome_email_and_the_database_on_the_embedded_defaults_are_private(
    lenient_umask: Path,
) -> None:
    env = {"MAILFLOW_SECRET_KEY": SECRET_KEY}
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    (lenient_umask / "orgs.csv").write_text("code,name,type\nRXA,Riverside,trust\n")
    assert runner.invoke(cli, ["orgs", "import", "orgs.csv"], env=env).exit_code == 0
    add = ["users", "add", "nia@riverside.example", "--name", "Nia Shah", "--org", "RXA"]
    added = runner.invoke(cli, [*add, "--role", "responder"], env=env)
    assert added.exit_code == 0, added.output

    runtime = Runtime(load_settings(environ=env))
    worker = QueueWorker(runtime, poll_seconds=0.05)
    worker.start()
    try:

        def welcome_sent() -> bool:
            with runtime.sessions() as session:
                state = session.scalar(select(OutgoingEmail.state))
            return state == OutgoingState.SENT

        wait_until(welcome_sent, timeout=30, what="the welcome email to reach the maildir")
    finally:
        worker.stop()
        runtime.close()

    var = lenient_umask / "var"
    messages = list((var / "maildir" / "new").iterdir())
    assert len(messages) == 1
    assert b"/enrol/" in messages[0].read_bytes()
    assert mode(var) == 0o700
    for folder in ("maildir", "maildir/new", "maildir/tmp", "maildir/cur"):
        assert mode(var / folder) == 0o700, folder
    assert mode(messages[0]) == 0o600
    database_files = list(var.glob("mailflow.db*"))
    assert var / "mailflow.db" in database_files
    for path in database_files:
        assert mode(path) == 0o600, path.name

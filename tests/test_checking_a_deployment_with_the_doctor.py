"""An operator runs `mailflow doctor` to see whether everything the
settings name is there and answers: one line a check, FAIL lines saying
what to do, a non-zero exit when any failed, and nothing sent or
changed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from click.testing import Result

from mailflow.config import Settings, load_settings
from mailflow.core.doctor import FAIL, OK, SKIP, check_broker, check_imap
from mailflow.core.runtime import Runtime
from mailflow.db import migrate
from mailflow.db.engine import make_engine
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from tests.support.cli import mailflow
from tests.support.dovecot import DovecotAccount
from tests.support.environment import SECRET_KEY
from tests.support.relay import CapturingRelay, free_port
from tests.support.web_server import web_server


def lines_of(result: Result) -> dict[str, str]:
    """Each check's line, by the check's name, without its status."""
    found = {}
    for line in result.stdout.splitlines():
        status, name, detail = line[:4].strip(), *line[5:].split("  ", 1)
        found[name] = f"{status} {detail}"
    return found


def doctor(database_url: str, *args: str, **environ: str) -> Result:
    return mailflow(
        "doctor", *args, database_url=database_url, MAILFLOW_SECRET_KEY=SECRET_KEY, **environ
    )


@contextmanager
def running_service(settings: Settings) -> Iterator[tuple[int, int]]:
    """The inbound server and the web app, for real, on loopback ports."""
    runtime = Runtime(settings)
    inbound = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    web_port = free_port()
    inbound.start()
    try:
        with web_server(runtime, web_port):
            yield inbound.port, web_port
    finally:
        inbound.stop()
        runtime.close()


def test_the_doctor_says_ok_to_a_working_set_up_and_sends_nothing(
    settings: Settings, relay: CapturingRelay
) -> None:
    with running_service(settings) as (inbound_port, web_port):
        result = doctor(
            settings.database_url,
            MAILFLOW_SMTP_RELAY=f"smtp://127.0.0.1:{relay.port}",
            MAILFLOW_INBOUND_ADDR=f"127.0.0.1:{inbound_port}",
            MAILFLOW_BASE_URL=f"http://127.0.0.1:{web_port}",
        )
    assert result.exit_code == 0, result.stdout
    lines = lines_of(result)
    assert lines["settings"] == "ok loaded"
    assert lines["database"] == f"ok {settings.database_url}"
    assert lines["schema"] == f"ok at {migrate.head_revision()}, the newest"
    assert lines["durability"].startswith("ok ")
    assert lines["broker"].startswith("skip none configured: jobs run in-process")
    assert lines["relay"] == f"ok smtp://127.0.0.1:{relay.port} answered EHLO"
    assert lines["inbound"] == f"ok 127.0.0.1:{inbound_port} answered 220"
    assert lines["imap"] == "skip not configured"
    assert lines["web"].startswith(f"ok http://127.0.0.1:{web_port} answered ")
    assert relay.received == []


def test_the_doctor_says_what_to_fix_in_a_broken_set_up(tmp_path: Path) -> None:
    closed = free_port()
    result = doctor(
        f"sqlite:///{tmp_path / 'never-created.db'}",
        MAILFLOW_SMTP_RELAY=f"smtp://relayuser:relay-password-9@127.0.0.1:{closed}",
        MAILFLOW_INBOUND_ADDR=f"127.0.0.1:{closed}",
        MAILFLOW_BASE_URL=f"http://127.0.0.1:{closed}",
    )
    assert result.exit_code == 1
    lines = lines_of(result)
    assert "run `mailflow db upgrade` to create it" in lines["database"]
    assert lines["database"].startswith("FAIL ")
    assert lines["relay"] == (
        f"FAIL connection refused at 127.0.0.1:{closed}: start the relay or set MAILFLOW_SMTP_RELAY"
    )
    assert lines["inbound"].startswith(f"FAIL connection refused at 127.0.0.1:{closed}: start")
    assert lines["web"].startswith(f"FAIL http://127.0.0.1:{closed} unreachable: ")
    assert "relay-password-9" not in result.output
    # Looking did not create the database.
    assert not (tmp_path / "never-created.db").exists()


def test_the_doctor_asks_for_an_upgrade_when_the_schema_is_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine, "0011")
    engine.dispose()
    result = doctor(url, "--timeout", "1")
    assert result.exit_code == 1
    head = migrate.head_revision()
    assert lines_of(result)["schema"] == f"FAIL at 0011, not {head}: run `mailflow db upgrade`"


@pytest.mark.backends("postgresql")
def test_the_doctor_reports_a_database_it_cannot_reach(
    backend: str, database_url: str, relay: CapturingRelay
) -> None:
    missing = sa.make_url(database_url).set(database="no_such_mailflow_database", password="pw-7")
    result = doctor(
        missing.render_as_string(hide_password=False),
        "--timeout",
        "2",
        MAILFLOW_SMTP_RELAY=f"smtp://127.0.0.1:{relay.port}",
    )
    assert result.exit_code == 1
    line = lines_of(result)["database"]
    assert line.startswith("FAIL cannot connect to postgresql+psycopg://postgres:***@")
    assert "no_such_mailflow_database" in line
    assert "pw-7" not in result.output
    assert relay.received == []


def test_a_server_that_never_answers_is_reported_not_waited_for(tmp_path: Path) -> None:
    # Listening, so connecting succeeds, but never greeting.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = doctor(
            f"sqlite:///{tmp_path / 'x.db'}",
            "--timeout",
            "0.5",
            MAILFLOW_INBOUND_ADDR=f"127.0.0.1:{port}",
            MAILFLOW_SMTP_RELAY=f"smtp://127.0.0.1:{port}",
        )
    assert result.exit_code == 1
    lines = lines_of(result)
    assert lines["inbound"].startswith(f"FAIL no answer in time at 127.0.0.1:{port}")
    assert lines["relay"].startswith(f"FAIL no answer in time at 127.0.0.1:{port}")


def test_settings_that_do_not_load_are_reported_and_nothing_else_is_tried(tmp_path: Path) -> None:
    result = doctor(f"sqlite:///{tmp_path / 'x.db'}", MAILFLOW_SMTP_RELAY="http://relay")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "FAIL settings  MAILFLOW_SMTP_RELAY: expected smtp://host:port or smtps://host:port: "
        "nothing else was checked"
    ]


def test_the_doctor_logs_in_to_the_imap_mailbox_and_out_again(
    dovecot: DovecotAccount,
) -> None:
    good = load_settings(
        environ={"MAILFLOW_IMAP_URL": dovecot.url(), "MAILFLOW_SECRET_KEY": SECRET_KEY}
    )
    assert check_imap(good, 5).status == OK
    wrong_url = dovecot.url().replace(dovecot.password, "wrong-password-3")
    bad = load_settings(environ={"MAILFLOW_IMAP_URL": wrong_url, "MAILFLOW_SECRET_KEY": SECRET_KEY})
    finding = check_imap(bad, 5)
    assert finding.status == FAIL
    assert "wrong-password-3" not in finding.detail


def test_the_doctor_reaches_the_broker_when_one_is_configured(broker_url: str) -> None:
    def settings_with(url: str) -> Settings:
        return load_settings(
            environ={"MAILFLOW_BROKER_URL": url, "MAILFLOW_SECRET_KEY": SECRET_KEY}
        )

    assert check_broker(settings_with(broker_url), 5).status == OK
    closed = broker_url.replace(f":{urlsplit(broker_url).port}", f":{free_port()}")
    finding = check_broker(settings_with(closed), 2)
    assert finding.status == FAIL
    assert finding.detail.startswith("cannot connect to ")
    assert check_broker(settings_with(""), 2).status == SKIP

"""An operator mistypes a command, names something that does not exist or
points mailflow at a database it cannot use: every time they get one line
saying what is wrong, a non-zero exit, and nothing changes."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.core.models import AuditEvent, InboundMessage, InboundState, Job, User
from mailflow.db import migrate
from mailflow.gateway.inbound_messages import fail_inbound, store_inbound_message
from tests.support.cli import SECRET_KEY, mailflow, one_error_line

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
PROJECT = Path(__file__).resolve().parent.parent
NOWHERE = "postgresql://mailflow@127.0.0.1:1/mailflow"


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def failed_message(session: Session) -> int:
    """A reply whose processing failed, waiting for `inbound retry`."""
    message = store_inbound_message(
        session,
        b"From: ann@riverside.example\r\nSubject: Re: CC-4720\r\n\r\ncomplete\r\n",
        source="smtp",
        envelope_from="ann@riverside.example",
        envelope_to=["reply+abc@alerts.test"],
        now=NOW,
    )
    fail_inbound(session, message.id, error="the worker was killed", now=NOW)
    session.commit()
    return message.id


@pytest.fixture
def claim_revision(engine: sa.Engine) -> Iterator[Callable[[str], None]]:
    """Make the database claim another schema revision; the true one is put
    back afterwards (the PostgreSQL database serves the whole session)."""

    def claim(revision: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})

    yield claim
    claim(str(migrate.head_revision()))


def counts(engine: sa.Engine) -> tuple[int, ...]:
    """How many users, jobs and audit events there are."""
    with engine.connect() as conn:
        return tuple(
            int(conn.scalar(select(func.count()).select_from(model)) or 0)
            for model in (User, Job, AuditEvent)
        )


def busy_port() -> socket.socket:
    """A loopback port someone else is already listening on."""
    taken = socket.create_server(("127.0.0.1", 0))
    return taken


def run_installed(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """The installed `mailflow` in its own process, for commands that take
    over signals (serve)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILFLOW_")}
    env.update({"MAILFLOW_SECRET_KEY": SECRET_KEY, **environ})
    return subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "mailflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------ unknown things


def test_retrying_a_message_that_does_not_exist_names_it_and_retries_none(
    database_url: str, engine: sa.Engine, session: Session, failed_message: int
) -> None:
    before = counts(engine)

    result = mailflow("inbound", "retry", str(failed_message), "999", database_url=database_url)

    assert result.exit_code == 1
    assert one_error_line(result) == "no inbound message 999 (nothing was written)"
    assert counts(engine) == before
    session.expire_all()
    assert session.get_one(InboundMessage, failed_message).state == InboundState.FAILED


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["alert", "show", "CC-9999"], "no alert CC-9999 (nothing was written)"),
        (["alert", "status", "CC-9999"], "no alert CC-9999 (nothing was written)"),
        (["users", "reset-mfa", "nobody@nowhere.example"], "no user nobody@nowhere.example"),
        (["users", "remove", "nobody@nowhere.example"], "no user nobody@nowhere.example"),
        (["users", "list", "--org", "ZZZ"], "org: 'ZZZ' is not a known organisation"),
        (
            ["users", "add", "new@nowhere.example", "--name", "New", "--org", "ZZZ", "--role",
             "responder"],
            "org: 'ZZZ' is not a known organisation",
        ),
        (["orgs", "import", "no-such.csv"], "no-such.csv: cannot read the file"),
        (["alert", "issue", "no-such.toml"], "no-such.toml: cannot read the file"),
    ],
)  # fmt: skip
def test_naming_something_that_does_not_exist_is_one_line_and_changes_nothing(
    database_url: str, engine: sa.Engine, args: list[str], line: str
) -> None:
    before = counts(engine)

    result = mailflow(*args, database_url=database_url)

    assert result.exit_code == 1
    assert one_error_line(result).startswith(line)
    assert counts(engine) == before


# --------------------------------------------------------- options and words


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (["inbound", "list", "--limit", "0"], "mailflow inbound list"),
        (["worker", "--threads", "0"], "mailflow worker"),
        (["serve", "--threads", "0"], "mailflow serve"),
        (["smtpd", "--listen", "nonsense"], "mailflow smtpd"),
        (["inbound", "retry", "seven"], "mailflow inbound retry"),
        (["users", "add", "ann@riverside.example", "--role", "boss"], "mailflow users add"),
        (["alert", "issue"], "mailflow alert issue"),
        (["--bogus"], "mailflow"),
        (["isue"], "mailflow"),
    ],
)
def test_a_mistyped_command_is_one_line_pointing_at_its_help(
    args: list[str], help_of: str, tmp_path: Path
) -> None:
    result = mailflow(*args)

    assert result.exit_code == 2
    assert one_error_line(result).endswith(f"(see `{help_of} --help`)")
    assert not (tmp_path / "var").exists()


def test_asking_for_the_version_gives_the_package_version() -> None:
    result = mailflow("--version")

    assert result.exit_code == 0
    assert result.stdout == "mailflow 0.1.0\n"


# ------------------------------------------------------------------ databases


@pytest.mark.parametrize("args", [["orgs", "list"], ["db", "upgrade"]])
def test_a_database_that_cannot_be_reached_is_one_line(args: list[str]) -> None:
    result = mailflow(*args, database_url=NOWHERE)

    assert result.exit_code == 2
    assert one_error_line(result).startswith("cannot reach the database: ")


def test_a_database_url_whose_port_is_not_a_number_is_refused_by_name() -> None:
    result = mailflow("orgs", "list", database_url="postgresql://mailflow@db.example:five/x")

    assert result.exit_code == 2
    assert one_error_line(result) == (
        "configuration: MAILFLOW_DATABASE_URL: the port is not a number from 0 to 65535"
    )


def test_a_file_that_is_not_a_database_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database at all\n" * 100, encoding="utf-8")

    for args in (["users", "list"], ["db", "upgrade"]):
        result = mailflow(*args, database_url=f"sqlite:///{notes}")

        assert result.exit_code == 2
        assert one_error_line(result) == "cannot use the database: file is not a database"
    assert notes.read_text(encoding="utf-8") == "not a database at all\n" * 100


def test_a_database_behind_this_mailflow_is_refused_until_upgraded(
    database_url: str, engine: sa.Engine, claim_revision: Callable[[str], None]
) -> None:
    claim_revision("0002")
    before = counts(engine)

    result = mailflow(
        "users", "add", "auditor@oversight.example", "--name", "Ola Nwosu", "--role", "auditor",
        database_url=database_url,
    )  # fmt: skip

    assert result.exit_code == 2
    assert one_error_line(result) == (
        "the database schema is not up to date: run `mailflow db upgrade`"
    )
    assert counts(engine) == before


def test_a_database_a_newer_mailflow_migrated_is_left_alone(
    database_url: str, engine: sa.Engine, claim_revision: Callable[[str], None]
) -> None:
    claim_revision("9999_from_a_newer_mailflow")

    result = mailflow("db", "upgrade", database_url=database_url)

    assert result.exit_code == 2
    assert one_error_line(result).startswith("cannot upgrade the database: ")
    assert "9999_from_a_newer_mailflow" in result.stderr
    assert migrate.current_revision(engine) == "9999_from_a_newer_mailflow"


# ---------------------------------------------------------- addresses in use


def test_a_web_address_already_in_use_is_one_line(database_url: str) -> None:
    with busy_port() as taken:
        port = taken.getsockname()[1]

        result = mailflow("web", "--listen", f"127.0.0.1:{port}", database_url=database_url)

    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"cannot listen on 127.0.0.1:{port}: ")


@pytest.mark.parametrize(
    ("args", "setting"),
    [(["--no-smtpd"], "MAILFLOW_WEB_ADDR"), (["--no-web"], "MAILFLOW_INBOUND_ADDR")],
)
def test_serve_stops_with_one_line_when_an_address_is_in_use(
    database_url: str, args: list[str], setting: str
) -> None:
    with busy_port() as taken:
        port = taken.getsockname()[1]

        finished = run_installed(
            "serve", *args, MAILFLOW_DATABASE_URL=database_url, **{setting: f"127.0.0.1:{port}"}
        )

    assert finished.returncode == 2
    lines = [line for line in finished.stderr.splitlines() if "mailflow: " in line]
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith("mailflow: cannot ")
    assert "Traceback" not in finished.stderr


# ----------------------------------------------------------- the last resort


def test_an_unforeseen_error_is_one_line_and_the_log_has_where(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> list[User]:
        raise RuntimeError("a bug no one foresaw")

    monkeypatch.setattr("mailflow.cli.users_command.users_in_pages", broken)

    quiet = mailflow("users", "list", database_url=database_url)
    verbose = mailflow("--verbose", "users", "list", database_url=database_url)

    assert quiet.exit_code == verbose.exit_code == 1
    assert one_error_line(quiet) == (
        "unexpected error: RuntimeError: a bug no one foresaw (run with --verbose to see where)"
    )
    # With --verbose the traceback is logged (here, to pytest's log capture).
    [logged] = [record for record in caplog.records if record.exc_info]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError

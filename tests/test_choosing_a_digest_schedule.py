"""An auditor's digest schedule from the command line: set when they are
added (`--digest daily|weekly|off`, daily unless given), changed later
(`mailflow users digest EMAIL SCHEDULE`), shown in `users list`, and
refused for anyone who is not an auditor, with nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.models import AuditEvent, DigestSchedule, User
from tests.support.cli import mailflow, one_error_line

DEMO_ORGS = Path(__file__).resolve().parent.parent / "demo" / "orgs.csv"


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def add(database_url: str, email: str, *args: str) -> tuple[int, str]:
    result = mailflow(
        "users", "add", email, "--name", "Ada Price", *args, database_url=database_url
    )
    return result.exit_code, result.stdout


def schedule_of(session: Session, email: str) -> DigestSchedule:
    session.rollback()
    return session.scalars(select(User.digest).where(User.email == email)).one()


def test_an_auditor_is_added_with_a_weekly_digest(database_url: str, session: Session) -> None:
    code, said = add(database_url, "ada@audit.example", "--role", "auditor", "--digest", "weekly")

    assert code == 0
    assert said == "added ada@audit.example (Ada Price): auditor\n"
    assert schedule_of(session, "ada@audit.example") is DigestSchedule.WEEKLY
    listing = mailflow("users", "list", database_url=database_url).stdout
    assert "auditor, digest weekly" in listing


def test_an_auditor_added_without_one_gets_a_daily_digest(
    database_url: str, session: Session
) -> None:
    assert add(database_url, "ada@audit.example", "--role", "auditor")[0] == 0

    assert schedule_of(session, "ada@audit.example") is DigestSchedule.DAILY


def test_the_schedule_is_changed_later_and_the_change_audited(
    database_url: str, session: Session
) -> None:
    add(database_url, "ada@audit.example", "--role", "auditor")

    weekly = mailflow("users", "digest", "ADA@audit.example", "weekly", database_url=database_url)
    off = mailflow("users", "digest", "ada@audit.example", "off", database_url=database_url)

    assert weekly.stdout == "ada@audit.example is sent a digest weekly\n"
    assert off.stdout == "ada@audit.example is sent no digests\n"
    assert schedule_of(session, "ada@audit.example") is DigestSchedule.OFF
    changes = session.scalars(
        select(AuditEvent.details)
        .where(AuditEvent.action == "user.digest_changed")
        .order_by(AuditEvent.id)
    ).all()
    assert [c["digest"] for c in changes] == ["weekly", "off"]


def test_a_digest_for_someone_not_an_auditor_is_refused_and_nothing_written(
    database_url: str, session: Session
) -> None:
    assert mailflow("orgs", "import", str(DEMO_ORGS), database_url=database_url).exit_code == 0
    result = mailflow(
        "users",
        "add",
        "raj@riverside.example",
        "--name",
        "Raj Patel",
        "--org",
        "RXA",
        "--role",
        "responder",
        "--digest",
        "weekly",
        database_url=database_url,
    )

    assert result.exit_code == 1
    assert "only auditors are sent digests" in one_error_line(result)
    assert session.scalars(select(User.id)).all() == []

    added = mailflow(
        "users",
        "add",
        "raj@riverside.example",
        "--name",
        "Raj Patel",
        "--org",
        "RXA",
        "--role",
        "responder",
        database_url=database_url,
    )
    assert added.exit_code == 0
    changed = mailflow(
        "users", "digest", "raj@riverside.example", "daily", database_url=database_url
    )
    assert changed.exit_code == 1
    assert one_error_line(changed).startswith(
        "digest: raj@riverside.example is not an auditor: only auditors get digests"
    )


def test_an_unknown_schedule_is_refused_by_the_command(database_url: str) -> None:
    result = mailflow(
        "users",
        "add",
        "ada@audit.example",
        "--name",
        "Ada Price",
        "--role",
        "auditor",
        "--digest",
        "hourly",
        database_url=database_url,
    )

    assert result.exit_code == 2
    assert "'hourly' is not one of 'daily', 'weekly', 'off'" in result.stderr

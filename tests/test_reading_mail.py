"""A newcomer runs the demo and wants to read the emails it sent: the files
in the maildir are quoted-printable or base64, so `mailflow mail list` and
`mailflow mail show N [--links]` decode them, with nothing else installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.links import ANSWER_LINK, ENROL_LINK
from mailflow.core.models import User
from mailflow.core.runtime import Runtime
from mailflow.people.welcome_email import queue_welcome_email
from tests.support.cli import mailflow, one_error_line
from tests.support.seed import AUDIENCE_RECIPIENTS, NOW, issue, seed_people
from tests.support.waiting import run_worker_until_settled, wait_until

ORGANISATION_NAMES = {"RXA": "Riverside Acute NHS Trust"}


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sent(settings_for: Any, database_url: str, engine: sa.Engine) -> Settings:
    """An alert to three trusts and a welcome email for Ann, written to the
    local maildir by the real worker on the embedded defaults."""
    settings: Settings = settings_for(database_url)
    assert settings.smtp_relay is None
    with Session(engine) as session:
        seed_people(session)
        ann = session.scalars(select(User).where(User.email == "ann@riverside.example")).one()
        queue_welcome_email(session, settings, user=ann, now=NOW)
        alert_id = issue(session).alert.id
        session.commit()
    runtime = Runtime(settings)
    try:
        run_worker_until_settled(runtime, alert_id)
        expected = len(AUDIENCE_RECIPIENTS) + 1
        wait_until(
            lambda: len(list((settings.maildir / "new").iterdir())) == expected,
            timeout=30,
            what="the welcome email",
        )
    finally:
        runtime.close()
    return settings


def read(settings: Settings, *args: str) -> tuple[int, str]:
    result = mailflow("mail", *args, MAILFLOW_MAILDIR=str(settings.maildir))
    assert result.exit_code == 0, result.stderr
    return result.exit_code, result.stdout


def listed(settings: Settings) -> list[list[str]]:
    """`mailflow mail list`, each line split into number, date, time, to,
    kind and the subject's first word."""
    _, out = read(settings, "list")
    return [line.split(maxsplit=5) for line in out.splitlines()]


def number_of(settings: Settings, to: str, kind: str) -> str:
    [number] = [row[0] for row in listed(settings) if row[3] == to and row[4] == kind]
    return number


def test_the_emails_are_listed_numbered_newest_last_with_their_kind(sent: Settings) -> None:
    rows = listed(sent)

    assert [row[0] for row in rows] == [str(n) for n in range(1, len(rows) + 1)]
    assert sorted(row[3] for row in rows if row[4] == "alert") == sorted(AUDIENCE_RECIPIENTS)
    assert [row[3] for row in rows if row[4] == "welcome"] == ["ann@riverside.example"]
    assert all(row[5].startswith("[CC-4720 HIGH] ") for row in rows if row[4] == "alert")
    when = [f"{row[1]} {row[2]}" for row in rows]
    assert when == sorted(when)


def test_an_alert_is_shown_with_its_headers_and_its_text_decoded(sent: Settings) -> None:
    number = number_of(sent, "ann@riverside.example", "alert")

    _, out = read(sent, "show", number)

    headers, _, text = out.partition("\n\n")
    assert "To: Ann Lee <ann@riverside.example>" in headers.splitlines()
    assert any(line.startswith("Reply-To: reply+") for line in headers.splitlines())
    [file] = [line.removeprefix("File: ") for line in headers.splitlines() if "File: " in line]
    assert "Dear Ann Lee," in text
    assert "Upgrade to 9.4.2." in text
    # Only the plain-text part is shown, not the HTML beside it.
    assert "<html" not in text and Path(file).exists()


def test_an_alerts_links_are_listed_whole_with_what_each_records(sent: Settings) -> None:
    number = number_of(sent, "ann@riverside.example", "alert")

    _, out = read(sent, "show", number, "--links")

    answer_links = {
        label: url
        for label, _, url in (line.rpartition(": ") for line in out.splitlines())
        if "/r/" in url
    }
    assert set(answer_links) == {
        f"{status.label} for {ORGANISATION_NAMES['RXA']}" for status in AnswerStatus
    }
    for label, url in answer_links.items():
        # Whole: the token in each link is the one that was signed.
        token = url.removeprefix("https://mailflow.test/r/")
        payload = ANSWER_LINK.tokens(sent).verify(token)
        assert AnswerStatus(payload["s"]).label in label
    assert "https://example.org/advisories/vpn" in out.splitlines()


def test_a_welcome_emails_set_up_link_is_listed_whole(sent: Settings) -> None:
    number = number_of(sent, "ann@riverside.example", "welcome")

    _, out = read(sent, "show", number, "--links")

    [line] = [line for line in out.splitlines() if "/enrol/" in line]
    label, _, url = line.rpartition(": ")
    assert label
    assert ENROL_LINK.tokens(sent).verify(url.removeprefix("https://mailflow.test/enrol/"))["u"]


@pytest.mark.parametrize("number", ["0", "99"])
def test_an_email_number_out_of_range_is_one_line(sent: Settings, number: str) -> None:
    held = len(listed(sent))

    result = mailflow("mail", "show", number, MAILFLOW_MAILDIR=str(sent.maildir))

    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"no email {number}: {sent.maildir} holds {held} (see `mailflow mail list`)"
    )


def test_a_maildir_not_written_yet_is_one_line(tmp_path: Path) -> None:
    result = mailflow("mail", "list", MAILFLOW_MAILDIR="var/maildir")

    assert result.exit_code == 1
    assert one_error_line(result) == (
        "no emails in var/maildir yet (MAILFLOW_MAILDIR, relative to the current folder)"
    )
    assert not (tmp_path / "var").exists()

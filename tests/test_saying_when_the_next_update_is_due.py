"""An answer that is not final owes an update: in progress, by its next
update date (the date the person asks for, else its expected date, else 3
days on); unable, by its review date (14 days on).  The person says it in
a reply or on the confirmation page; the receipt and `alert status` show
it; a final answer clears it."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.receipts import queue_receipts
from mailflow.answers.recording import alert_status_lines, record_answers
from mailflow.answers.reply_form import ReplyNotUnderstood, build_reply_form, parse_reply
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import UpdateDates
from mailflow.config import Settings
from mailflow.core.errors import InvalidInput
from mailflow.core.models import Alert, AlertStatus, Answer, Organisation, OutgoingEmail, User
from mailflow.core.runtime import utc_now
from tests.support.cli import mailflow_with
from tests.support.pages import Web, answer_link, pending_link, post_form, read_form
from tests.support.seed import issue, seed_people

TODAY = date(2026, 11, 26)
THREE = ["RXA", "RXB", "RXC"]


def read(text: str, held: list[str] | None = None) -> list[AnswerValue]:
    return parse_reply(text, held=THREE if held is None else held, today=TODAY)


def problems(text: str, held: list[str] | None = None) -> list[tuple[int, str]]:
    with pytest.raises(ReplyNotUnderstood) as caught:
        read(text, held)
    return [(p.line, p.problem) for p in caught.value.problems]


# ------------------------------------------------------------ in a reply


@pytest.mark.parametrize(
    ("written", "next_update", "expected", "note"),
    [
        ("next update 12 December", date(2026, 12, 12), None, None),
        ("next update on 12/12/2026", date(2026, 12, 12), None, None),
        ("update by 12 Dec", date(2026, 12, 12), None, None),
        ("Next update due: 2026-12-12.", date(2026, 12, 12), None, None),
        (
            "patching this weekend; expected 14 December; next update 12 December",
            date(2026, 12, 12),
            date(2026, 12, 14),
            "patching this weekend; expected 14 December",
        ),
        (
            "next update 1 December, expected 14 December",
            date(2026, 12, 1),
            date(2026, 12, 14),
            "expected 14 December",
        ),
        # Only "next update", or "update" at the start of a clause, asks
        # for a date: this is the expected date, as before.
        ("we will apply the update by 12 Dec", None, date(2026, 12, 12), None),
        ("update to follow", None, None, "update to follow"),
        # Without "next" and without a date straight after, it is a note.
        (
            "waiting on the supplier; update by Friday",
            None,
            None,
            "waiting on the supplier; update by Friday",
        ),
        ("Review on Monday with the CAB", None, None, "Review on Monday with the CAB"),
    ],
)
def test_an_in_progress_reply_can_say_when_the_next_update_is_due(
    written: str, next_update: date | None, expected: date | None, note: str | None
) -> None:
    [answer] = read(f"RXA: in progress: {written}", ["RXA"])

    assert answer.status is AnswerStatus.IN_PROGRESS
    assert (answer.next_update_on, answer.expected_on) == (next_update, expected)
    if note is not None or next_update is not None:
        assert answer.note == note


def test_the_next_update_on_a_line_of_its_own_belongs_to_the_answer_above() -> None:
    answers = read("RXA: in progress: patching tonight\nNext update: 2 December\nRXB: complete")

    by_code = {a.organisation: a for a in answers}
    assert by_code["RXA"].next_update_on == date(2026, 12, 2)
    assert by_code["RXA"].note == "patching tonight"
    assert by_code["RXB"].next_update_on is None


def test_a_sentence_and_all_organisations_can_carry_the_next_update() -> None:
    [one] = read("We are investigating, next update 12 December", ["RXA"])
    [bare] = read("In progress next update 12 December", ["RXA"])
    several = read("ALL: in progress, next update 3 December")

    assert (one.status, one.next_update_on) == (AnswerStatus.IN_PROGRESS, date(2026, 12, 12))
    assert one.note is None  # the sentence only says the status
    assert (bare.status, bare.next_update_on, bare.note) == (
        AnswerStatus.IN_PROGRESS,
        date(2026, 12, 12),
        None,
    )
    assert {a.next_update_on for a in several} == {date(2026, 12, 3)}
    assert len(several) == 3


def test_an_unable_reply_can_say_when_it_is_reviewed() -> None:
    [answer] = read(
        "RXC: unable: the supplier has no fix yet; mitigations: service offline; review 1 March",
        ["RXC"],
    )

    assert answer.reason == "the supplier has no fix yet"
    assert answer.mitigations == "service offline"
    assert answer.next_update_on == date(2027, 3, 1)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("next update Friday", "does not give a date: write it as a date"),
        ("next update 31 April", "'31 April' is not a real date"),
        ("next update 12/12/2025", "has passed: give a later date"),
        ("next update 1 January 2029", "is more than a year ahead"),
        ("next update 3 December; next update 4 December", "give one next update date"),
    ],
)
def test_a_next_update_that_cannot_be_read_is_named_by_its_line(written: str, problem: str) -> None:
    found = problems(f"RXA: complete\nRXB: in progress: {written}")

    assert len(found) == 1 and found[0][0] == 2
    assert problem in found[0][1]


def test_the_reply_form_shows_how_to_give_the_date_and_reads_it_back() -> None:
    form = build_reply_form([("RXA", "Riverside")])
    [in_progress] = [line for line in form.status_lines if line.startswith("in progress")]
    example = in_progress.split("optional: ")[1].rstrip(")")

    [answer] = read(f"RXA: in progress: {example}", ["RXA"])

    assert answer.next_update_on == date(2026, 12, 2)
    assert answer.expected_on == date(2026, 12, 5)
    assert any("review" in line for line in form.status_lines)


# ------------------------------------------------------------- recording

# A Tuesday, 15:00 in London.
ANSWERED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
ANSWERED_ON = date(2026, 12, 1)


@pytest.fixture
def alert_id(session: Session) -> int:
    seed_people(session)
    alert = issue(session).alert
    session.commit()
    return alert.id


def record(
    session: Session, settings: Settings, alert_id: int, *answers: AnswerValue, **kw: Any
) -> list[Answer]:
    raj = session.scalars(select(User).where(User.email == "raj@riverside.example")).one()
    recorded = record_answers(
        session,
        settings,
        user_id=raj.id,
        alert_id=alert_id,
        answers=list(answers),
        via="link",
        now=kw.get("now", ANSWERED),
    )
    session.commit()
    return recorded


def due_on(session: Session, alert_id: int, code: str) -> date | None:
    org = session.scalars(select(Organisation).where(Organisation.code == code)).one()
    return session.get_one(AlertStatus, (alert_id, org.id)).update_due_on


@pytest.mark.parametrize(
    ("answer", "next_update"),
    [
        (AnswerValue("RXA", AnswerStatus.IN_PROGRESS), date(2026, 12, 4)),
        (
            AnswerValue("RXA", AnswerStatus.IN_PROGRESS, expected_on=date(2026, 12, 10)),
            date(2026, 12, 10),
        ),
        # An expected date already passed gives the default.
        (
            AnswerValue("RXA", AnswerStatus.IN_PROGRESS, expected_on=date(2026, 11, 20)),
            date(2026, 12, 4),
        ),
        (
            AnswerValue(
                "RXA",
                AnswerStatus.IN_PROGRESS,
                expected_on=date(2026, 12, 10),
                next_update_on=date(2026, 12, 2),
            ),
            date(2026, 12, 2),
        ),
        (AnswerValue("RXA", AnswerStatus.UNABLE, reason="r", mitigations="m"), date(2026, 12, 15)),
        (
            AnswerValue(
                "RXA",
                AnswerStatus.UNABLE,
                reason="r",
                mitigations="m",
                next_update_on=ANSWERED_ON + timedelta(days=1),
            ),
            ANSWERED_ON + timedelta(days=1),
        ),
        # An expected date years ahead (a wrong year) is chased within a year.
        (
            AnswerValue("RXA", AnswerStatus.IN_PROGRESS, expected_on=date(2062, 12, 12)),
            ANSWERED_ON + timedelta(days=366),
        ),
        (AnswerValue("RXA", AnswerStatus.COMPLETE), None),
        (AnswerValue("RXA", AnswerStatus.NOT_APPLICABLE, reason="not run here"), None),
    ],
)
def test_recording_an_answer_sets_when_its_next_update_is_due(
    session: Session, settings: Settings, alert_id: int, answer: AnswerValue, next_update: date
) -> None:
    [recorded] = record(session, settings, alert_id, answer)

    assert recorded.next_update_on == next_update
    assert due_on(session, alert_id, "RXA") == next_update
    [line] = [x for x in alert_status_lines(session, alert_id=alert_id) if x.code == "RXA"]
    assert line.update_due_on == next_update


def test_the_days_come_from_the_settings_and_a_final_answer_ends_the_chasing(
    session: Session, settings: Settings, alert_id: int
) -> None:
    settings = dataclasses.replace(settings, update_days=5, unable_review_days=7)
    record(session, settings, alert_id, AnswerValue("RXA", AnswerStatus.IN_PROGRESS))
    assert due_on(session, alert_id, "RXA") == date(2026, 12, 6)
    record(
        session,
        settings,
        alert_id,
        AnswerValue("RXA", AnswerStatus.UNABLE, reason="r", mitigations="m"),
    )
    assert due_on(session, alert_id, "RXA") == date(2026, 12, 8)

    record(session, settings, alert_id, AnswerValue("RXA", AnswerStatus.COMPLETE))

    assert due_on(session, alert_id, "RXA") is None


def test_the_day_is_the_day_in_london_not_in_utc(
    session: Session, settings: Settings, alert_id: int
) -> None:
    # 23:30 UTC on 30 June is already 1 July in London (summer time).
    late = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)
    [recorded] = record(
        session, settings, alert_id, AnswerValue("RXA", AnswerStatus.IN_PROGRESS), now=late
    )

    assert recorded.next_update_on == date(2026, 7, 4)


@pytest.mark.parametrize(
    ("asked", "problem"),
    [
        (ANSWERED_ON - timedelta(days=1), "has passed"),
        # Due today, it would be chased the moment it was recorded.
        (ANSWERED_ON, "is today: give a later date"),
        (ANSWERED_ON + timedelta(days=367), "more than a year ahead"),
    ],
)
def test_a_next_update_in_the_past_or_over_a_year_ahead_is_refused(
    session: Session, settings: Settings, alert_id: int, asked: date, problem: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        record(
            session,
            settings,
            alert_id,
            AnswerValue("RXA", AnswerStatus.IN_PROGRESS, next_update_on=asked),
        )

    assert refused.value.where == "next_update" and problem in refused.value.problem
    session.rollback()
    assert session.scalars(select(Answer)).all() == []


# -------------------------------------------------- the receipt and status


def test_the_receipt_says_when_the_next_update_and_the_review_are_due(
    session: Session, settings: Settings, alert_id: int
) -> None:
    ann = session.scalars(select(User).where(User.email == "li@itservices.example")).one()
    answers = record_answers(
        session,
        settings,
        user_id=ann.id,
        alert_id=alert_id,
        via="link",
        now=ANSWERED,
        answers=[
            AnswerValue("RXB", AnswerStatus.IN_PROGRESS),
            AnswerValue("RXC", AnswerStatus.UNABLE, reason="r", mitigations="m"),
        ],
    )
    alert = session.get_one(Alert, alert_id)
    queue_receipts(session, settings, user=ann, alert=alert, answers=answers, now=ANSWERED)
    session.commit()

    receipt = session.scalars(
        select(OutgoingEmail).where(
            OutgoingEmail.kind == "receipt", OutgoingEmail.recipient == ann.email
        )
    ).one()
    message = message_from_bytes(receipt.raw, policy=default)
    assert isinstance(message, EmailMessage)
    plain = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for text in (plain, html):
        assert "Next update due: Friday 4 December 2026" in text
        assert "Review due: Tuesday 15 December 2026" in text


def test_alert_status_shows_when_each_organisation_is_next_chased(
    session: Session,
    settings: Settings,
    alert_id: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    record(session, settings, alert_id, AnswerValue("RXA", AnswerStatus.IN_PROGRESS))

    shown = mailflow_with(settings, "alert", "status", "CC-4720")
    data = mailflow_with(settings, "alert", "status", "CC-4720", "--json")

    assert shown.exit_code == 0, shown.output
    assert "next update due: 2026-12-04" in shown.output
    by_code = {row["organisation"]: row for row in json.loads(data.output)["organisations"]}
    assert by_code["RXA"]["update_due_on"] == "2026-12-04"
    assert by_code["RXB"]["update_due_on"] is None


# ------------------------------------------------------------------ pages


def local_today(web: Web) -> date:
    return UpdateDates.of(web.settings).today(utc_now())


def date_fields(prefix: str, name: str, on: date) -> dict[str, str]:
    return {
        f"{prefix}{name}-day": str(on.day),
        f"{prefix}{name}-month": str(on.month),
        f"{prefix}{name}-year": str(on.year),
    }


def test_the_answer_page_says_when_the_next_update_is_due_and_lets_it_be_set(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.IN_PROGRESS
    )
    default_on = local_today(web) + timedelta(days=3)
    asked = local_today(web) + timedelta(days=10)

    page = web.client.get(path)
    assert 'id="next-update-day"' in page.text
    assert f"otherwise on {default_on:%A} {default_on.day} {default_on:%B %Y}" in page.text
    done = post_form(
        web.client,
        path,
        {**date_fields("", "next-update", asked), "code": web.code("raj@riverside.example")},
    )

    assert done.status_code == 200, done.text
    assert f"Next update due: {asked:%A} {asked.day} {asked:%B %Y}" in done.text
    answer = web.db().scalars(select(Answer)).one()
    assert answer.next_update_on == asked


@pytest.mark.parametrize(
    ("days", "problem"),
    [(-1, "has passed"), (400, "more than a year ahead"), (None, "must be a real date")],
)
def test_a_next_update_date_the_page_cannot_take_is_named_on_its_field(
    web: Web, days: int | None, problem: str
) -> None:
    path = answer_link(web.db(), web.settings, "li@itservices.example", "RXB", AnswerStatus.UNABLE)
    if days is None:
        typed = {"next-update-day": "31", "next-update-month": "2", "next-update-year": "2027"}
    else:
        typed = date_fields("", "next-update", local_today(web) + timedelta(days=days))

    page = post_form(
        web.client,
        path,
        {"reason": "r", "mitigations": "m", **typed, "code": web.code("li@itservices.example")},
    )

    assert page.status_code == 400
    assert read_form(page.text).summary_links == ["#next-update-day"]
    assert problem in page.text and "Review date" in page.text
    assert web.db().scalars(select(Answer)).all() == []


def test_the_confirm_page_shows_the_date_a_reply_asked_for_and_records_it(web: Web) -> None:
    asked = local_today(web) + timedelta(days=5)
    changed = local_today(web) + timedelta(days=6)
    path = pending_link(
        web.db(),
        web.settings,
        "li@itservices.example",
        [
            AnswerValue("RXB", AnswerStatus.IN_PROGRESS, next_update_on=asked),
            AnswerValue("RXC", AnswerStatus.UNABLE, reason="r", mitigations="m"),
        ],
    )

    page = web.client.get(path)
    asked_day = f'name="RXB-next-update-day" inputmode="numeric" maxlength="2" value="{asked.day}"'
    assert asked_day in page.text
    assert 'id="RXC-next-update-day"' in page.text and "Review date" in page.text
    done = post_form(
        web.client,
        path,
        {
            **date_fields("RXB-", "next-update", changed),
            "RXC-reason": "r",
            "RXC-mitigations": "m",
            "code": web.code("li@itservices.example"),
        },
    )

    assert done.status_code == 200, done.text
    rows = web.db().execute(select(Answer.status, Answer.next_update_on).order_by(Answer.id))
    assert [tuple(r) for r in rows] == [
        ("in_progress", changed),
        ("unable", local_today(web) + timedelta(days=14)),
    ]

"""What a digest says about one alert, gathered from the hand-built data
set of tests/support/reporting.py, where every number is known."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.reports.digest_content import Unable, Unanswered, gather_alert
from tests.support.reporting import EARLIER, LATER, LONDON, build, hours


def test_the_silent_and_the_unreachable_are_listed_with_hours_overdue(
    session: Session, settings: Settings
) -> None:
    digest = gather_alert(session, build(session, settings), as_at=LATER, zone=LONDON)

    assert digest.unanswered_total == 3
    assert digest.unanswered == (
        Unanswered("RXG", "Trust RXG", None, 32, 0, unreachable=True),
        Unanswered("RXH", "Trust RXH", None, 32, 0, unreachable=False),
        Unanswered("RXJ", "Trust RXJ", "RXA", 32, 0, unreachable=False),
    )


def test_before_the_deadline_nobody_is_overdue_and_lists_are_cut_to_the_limit(
    session: Session, settings: Settings
) -> None:
    digest = gather_alert(session, build(session, settings), as_at=EARLIER, zone=LONDON, limit=2)

    assert digest.unanswered_total == 5
    assert [org.code for org in digest.unanswered] == ["RXD", "RXF"]
    assert {org.hours_overdue for org in digest.unanswered} == {None}


def test_unable_answers_carry_their_reason_and_mitigations(
    session: Session, settings: Settings
) -> None:
    digest = gather_alert(session, build(session, settings), as_at=LATER, zone=LONDON)

    assert digest.unable_total == 1
    assert digest.unable == (
        Unable(
            "RXC",
            "Castleton Mental Health NHS Foundation Trust",
            "Vendor has no fix",
            "Port closed",
            hours(10),
            date(2026, 12, 16),
        ),
    )


def test_the_share_answered_grows_at_each_first_answer_hour(
    session: Session, settings: Settings
) -> None:
    digest = gather_alert(session, build(session, settings), as_at=LATER, zone=LONDON)

    # RXE's second answer (70 hours) is not a first answer.
    assert digest.answered_by_hour == ((2, 1), (4, 2), (10, 3), (20, 4), (30, 5), (60, 6))

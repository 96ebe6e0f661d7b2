"""The job that composes the chasing emails a pass decided on: two workers
at once, a worker that dies mid-batch and a row that cannot be composed
each leave every email queued exactly once; and an update-due email says
what was last recorded, unless a new answer came first."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import (
    Alert,
    AlertStatus,
    ChaseKind,
    ChaserEmail,
    ChaserEmailState,
    Membership,
    OutgoingEmail,
    User,
)
from mailflow.core.runtime import Runtime
from mailflow.deadlines import chaser_emails
from mailflow.deadlines.chaser_emails import compose_one, send_chasers
from mailflow.deadlines.rechecking import ALERT_CLOSED, ALL_UPDATED, NO_ROLE, PERSON_GONE
from tests.support.chasing import DEADLINE, ISSUED, Chasing
from tests.support.mail import plain_text

REMINDED_AT = DEADLINE - timedelta(hours=23)
BEA = "bea@brookfield.example"
EVERYONE = {
    "ann@riverside.example",
    "raj@riverside.example",
    "bea@brookfield.example",
    "li@itservices.example",
    "sam@castleton.example",
}


class Crash(BaseException):
    """The worker dying: not an error a row can be dropped for."""


@pytest.fixture
def decided(chasing: Chasing) -> Iterator[str]:
    """The 24-hour reminders decided (five emails), none composed: the batch."""
    chasing.issue()
    chasing.chase(REMINDED_AT)
    chasing.session.rollback()
    yield chasing.session.scalars(select(ChaserEmail.batch).distinct()).one()


def composed(session: Session) -> Counter[str]:
    """Reminder emails in the outbox, by recipient."""
    session.rollback()
    return Counter(
        session.scalars(select(OutgoingEmail.recipient).where(OutgoingEmail.kind.like("chase-%")))
    )


def states(session: Session) -> Counter[str]:
    session.rollback()
    return Counter(str(state) for state in session.scalars(select(ChaserEmail.state)))


def test_two_workers_at_once_queue_each_email_once(
    chasing: Chasing, decided: str, settings: Settings
) -> None:
    runtimes = [Runtime(settings, clock=chasing.clock) for _ in range(2)]
    start = threading.Barrier(2)
    again: list[datetime | None] = []

    def work(runtime: Runtime) -> None:
        start.wait()
        again.append(send_chasers(runtime, {"batch": decided}))

    threads = [threading.Thread(target=work, args=(rt,)) for rt in runtimes]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for runtime in runtimes:
            runtime.close()

    assert composed(chasing.session) == Counter(EVERYONE)
    assert states(chasing.session) == Counter({"composed": 5})
    # A worker that found the other holding rows looks again shortly, in
    # case the other died; by then there is nothing left to do.
    assert all(at is None or at > REMINDED_AT for at in again)
    assert send_chasers(chasing.runtime, {"batch": decided}) is None
    assert composed(chasing.session) == Counter(EVERYONE)


def test_a_row_taken_by_another_worker_is_left_alone(chasing: Chasing, decided: str) -> None:
    row_id = chasing.session.scalars(select(ChaserEmail.id).limit(1)).one()
    for _ in range(2):
        with chasing.runtime.sessions.begin() as session:
            compose_one(session, chasing.runtime.settings, row_id, REMINDED_AT)

    assert sum(composed(chasing.session).values()) == 1


def test_a_worker_that_dies_mid_batch_leaves_the_rest_for_the_next_run(
    chasing: Chasing, decided: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = chaser_emails.COMPOSERS[ChaseKind.REMINDER]
    calls = Counter[str]()

    def dies_on_the_third(session: Session, *args: object) -> OutgoingEmail | str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash
        return compose(session, *args)  # type: ignore[arg-type]

    monkeypatch.setitem(chaser_emails.COMPOSERS, ChaseKind.REMINDER, dies_on_the_third)
    with pytest.raises(Crash):
        send_chasers(chasing.runtime, {"batch": decided})
    assert composed(chasing.session) == Counter()
    assert states(chasing.session) == Counter({"queued": 5})

    monkeypatch.setitem(chaser_emails.COMPOSERS, ChaseKind.REMINDER, compose)
    assert send_chasers(chasing.runtime, {"batch": decided}) is None
    assert composed(chasing.session) == Counter(EVERYONE)


def test_a_row_that_cannot_be_composed_is_dropped_and_the_others_go(
    chasing: Chasing, decided: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = chaser_emails.COMPOSERS[ChaseKind.REMINDER]
    bea = chasing.session.scalars(
        select(User.id).where(User.email == "bea@brookfield.example")
    ).one()

    def fails_for_bea(session: Session, settings: Settings, row: ChaserEmail, now: datetime):  # type: ignore[no-untyped-def]
        if row.user_id == bea:
            raise ValueError("a template that does not render")
        return compose(session, settings, row, now)

    monkeypatch.setitem(chaser_emails.COMPOSERS, ChaseKind.REMINDER, fails_for_bea)
    assert send_chasers(chasing.runtime, {"batch": decided}) is None

    assert composed(chasing.session) == Counter(EVERYONE - {"bea@brookfield.example"})
    outcome = chasing.session.scalars(
        select(ChaserEmail.outcome).where(ChaserEmail.state == ChaserEmailState.DROPPED)
    ).one()
    # The kind of error only: an error's text may quote the email being queued.
    assert outcome == "could not compose: ValueError"


def close_the_alert(session: Session) -> None:
    session.execute(update(Alert).values(closed_at=REMINDED_AT, closed_reason="withdrawn"))


def bea_leaves(session: Session) -> None:
    session.execute(update(User).where(User.email == BEA).values(active=False))


def bea_loses_her_role(session: Session) -> None:
    bea = select(User.id).where(User.email == BEA).scalar_subquery()
    session.execute(delete(Membership).where(Membership.user_id == bea))


@pytest.mark.parametrize(
    ("change", "dropped"),
    [
        (close_the_alert, {email: ALERT_CLOSED for email in EVERYONE}),
        (bea_leaves, {BEA: PERSON_GONE}),
        (bea_loses_her_role, {BEA: NO_ROLE}),
    ],
)
def test_an_email_is_dropped_when_what_it_was_for_has_gone(
    chasing: Chasing,
    decided: str,
    change: Callable[[Session], None],
    dropped: dict[str, str],
) -> None:
    with chasing.runtime.sessions.begin() as session:
        change(session)

    assert send_chasers(chasing.runtime, {"batch": decided}) is None

    chasing.session.rollback()
    outcomes = chasing.session.execute(
        select(User.email, ChaserEmail.outcome)
        .join(User, User.id == ChaserEmail.user_id)
        .where(ChaserEmail.state == ChaserEmailState.DROPPED)
    )
    assert {email: outcome for email, outcome in outcomes} == dropped
    assert composed(chasing.session) == Counter(EVERYONE - set(dropped))


# -------------------------------------------------------------- update due

FRIDAY = datetime(2026, 12, 4, 9, 0, tzinfo=ISSUED.tzinfo)


def in_progress_for_rxa(chasing: Chasing) -> None:
    """Raj answered "in progress" for RXA on Tuesday, with its next update
    due on Friday (as the answer recorded it)."""
    chasing.issue()
    chasing.work()
    chasing.answer("raj@riverside.example", "RXA", ISSUED + timedelta(hours=1), "in_progress")
    with chasing.runtime.sessions.begin() as session:
        session.execute(update(AlertStatus).values(update_due_on=date(2026, 12, 4)))


def test_an_update_falls_due_and_the_responders_are_told_what_was_last_recorded(
    chasing: Chasing,
) -> None:
    in_progress_for_rxa(chasing)

    sent = chasing.chase_and_send(FRIDAY)

    update_due = {to: m for to, m in sent if m["Subject"].startswith("Update due: ")}
    assert set(update_due) == {"ann@riverside.example", "raj@riverside.example"}
    text = plain_text(update_due["raj@riverside.example"])
    assert (
        "An update on the remediation at Riverside Acute NHS Trust (RXA) was due on Friday "
        "4 December 2026. Last recorded: In progress on Tuesday 1 December 2026." in text
    )
    assert "RXA: complete" in text


def test_a_new_answer_before_the_update_email_is_composed_stops_it(chasing: Chasing) -> None:
    in_progress_for_rxa(chasing)
    chasing.chase(FRIDAY)
    # Still in progress, but a fresh answer: the update came.
    chasing.answer("raj@riverside.example", "RXA", FRIDAY + timedelta(minutes=1), "in_progress")
    chasing.clock.now = FRIDAY + timedelta(minutes=2)
    chasing.work()

    chasing.session.rollback()
    rows = chasing.session.execute(
        select(ChaserEmail.state, ChaserEmail.outcome).where(
            ChaserEmail.kind == ChaseKind.UPDATE_DUE
        )
    ).all()
    assert [tuple(r) for r in rows] == [(ChaserEmailState.DROPPED, ALL_UPDATED)] * 2
    assert chasing.outbox("chase-update-due") == []

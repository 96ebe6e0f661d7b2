"""What becomes of an email the relay does not take at once: the one rule
alert deliveries and one-off emails share."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.models import AuditEvent, OutgoingState
from mailflow.core.outgoing import queue_email, record_outgoing_result
from mailflow.core.sending import Outcome, SendPolicy, SendResult, Step, next_state
from tests.support.seed import NOW

POLICY = SendPolicy(retry_base_seconds=60, max_attempts=4)
BUSY = SendResult(Outcome.TEMPORARY, "451 4.3.0 try again later")


def test_a_busy_relay_is_tried_again_twice_as_late_each_time() -> None:
    waits = [
        next_state(BUSY, attempts=n, now=NOW, policy=POLICY).next_attempt_at for n in (1, 2, 3)
    ]

    assert [w - NOW for w in waits if w is not None] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
    ]


def test_the_wait_between_tries_is_never_longer_than_six_hours() -> None:
    patient = SendPolicy(retry_base_seconds=3600, max_attempts=100)

    state = next_state(BUSY, attempts=20, now=NOW, policy=patient)

    assert state.step is Step.DEFERRED
    assert state.next_attempt_at == NOW + timedelta(hours=6)


def test_an_email_the_relay_refuses_fails_at_once_with_the_refusal() -> None:
    refused = SendResult(Outcome.PERMANENT, "550 5.1.1 no such user")

    state = next_state(refused, attempts=1, now=NOW, policy=POLICY)
    assert (state.step, state.next_attempt_at, state.error) == (
        Step.FAILED,
        None,
        "550 5.1.1 no such user",
    )


def test_a_relay_still_busy_at_the_last_try_fails_the_email_saying_how_often() -> None:
    state = next_state(BUSY, attempts=4, now=NOW, policy=POLICY)

    assert state.step is Step.FAILED
    assert state.error == "gave up after 4 attempts: 451 4.3.0 try again later"


def test_a_one_off_email_given_up_on_counts_each_try_once(session: Session) -> None:
    email = queue_email(
        session,
        kind="welcome",
        recipient="ann@riverside.example",
        mail_from="bounce+k@mailflow.localhost",
        raw=b"Subject: hello\r\n\r\nhello\r\n",
        now=NOW,
    )
    retries = [
        record_outgoing_result(session, email, BUSY, now=NOW, policy=POLICY) for _ in range(4)
    ]
    session.commit()

    assert retries[:3] == [
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=2),
        NOW + timedelta(minutes=4),
    ]
    assert retries[3] is None
    assert (email.state, email.attempts) == (OutgoingState.FAILED, 4)
    assert email.last_error == "gave up after 4 attempts: 451 4.3.0 try again later"
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.subject == f"email:{email.id}")
    )
    assert list(actions) == ["email.failed"]

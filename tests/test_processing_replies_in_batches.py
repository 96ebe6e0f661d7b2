"""Stored replies are processed a batch at a time (one claim, one write
transaction), and their confirm emails sent a batch at a time: one bad
message is marked failed on its own and never holds back the others."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import (
    Delivery,
    DeliveryState,
    InboundMessage,
    InboundState,
    Job,
    JobState,
    OutgoingEmail,
    OutgoingState,
    PendingAnswer,
    User,
)
from mailflow.core.runtime import Runtime
from mailflow.gateway.inbound_messages import PROCESS_INBOUND, retry_inbound, store_inbound_message
from mailflow.workers import inbound
from mailflow.workers.job_runs import JobRuns
from mailflow.workers.queue import BATCH_SIZE, JobQueue, QueueWorker
from tests.support.log_lines import captured_log
from tests.support.mail import reply
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_crowd
from tests.support.waiting import wait_until

DOMAIN = "alerts.test"
REPLIES = 12


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@dataclass(frozen=True)
class Stored:
    message_ids: list[int]
    job_ids: list[int]
    senders: list[str]


@pytest.fixture
def stored(runtime: Runtime, session: Session) -> Stored:
    """An alert to REPLIES organisations of one responder each (its emails
    already sent), and a reply from each responder stored with its job."""
    crowd = seed_crowd(session, organisations=REPLIES, per_organisation=1)
    issue(session, audience={"organisations": crowd.org_codes})
    session.execute(update(Delivery).values(state=DeliveryState.SENT))
    session.execute(update(Job).values(state=JobState.DONE))
    session.commit()
    rows = session.execute(
        select(User.email, Delivery.reply_key, User.id)
        .join(Delivery, Delivery.user_id == User.id)
        .order_by(User.id)
    ).all()
    codes = dict(zip(crowd.emails, crowd.org_codes, strict=True))
    message_ids = []
    with runtime.sessions.begin() as writing:
        for email, key, _ in rows:
            message = store_inbound_message(
                writing,
                reply(email, f"{codes[email]}: complete"),
                source="smtp",
                envelope_from=email,
                envelope_to=[f"reply+{key}@{DOMAIN}"],
                now=runtime.clock(),
            )
            message_ids.append(message.id)
    with runtime.sessions() as reading:
        job_ids = list(
            reading.scalars(select(Job.id).where(Job.kind == PROCESS_INBOUND).order_by(Job.id))
        )
    return Stored(message_ids, job_ids, [email for email, _, _ in rows])


def states(session: Session) -> dict[str, int]:
    session.rollback()
    return {
        str(state): count
        for state, count in session.execute(
            select(InboundMessage.state, func.count()).group_by(InboundMessage.state)
        )
    }


def poison(monkeypatch: pytest.MonkeyPatch, bad_message_id: int) -> None:
    """One message whose recording raises, as a fault of ours would."""
    real_route = inbound.route

    def route(context: Any, kinds: Any, prepared: object) -> Any:
        if context.message.id == bad_message_id:
            raise RuntimeError("a fault in recording this one message")
        return real_route(context, kinds, prepared)

    monkeypatch.setattr(inbound, "route", route)


def test_a_batch_is_claimed_once_and_every_reply_processed(
    runtime: Runtime, stored: Stored, session: Session
) -> None:
    assert JobRuns(runtime).run(stored.job_ids)

    assert states(session) == {"processed": REPLIES}
    assert session.scalar(select(func.count()).select_from(PendingAnswer)) == REPLIES
    jobs = session.execute(select(Job.state, Job.attempts).where(Job.id.in_(stored.job_ids)))
    assert set(jobs) == {(JobState.DONE, 1)}
    confirms = list(session.scalars(select(OutgoingEmail.recipient)))
    assert sorted(confirms) == sorted(stored.senders)


def test_one_poisoned_message_fails_alone_and_is_processed_when_retried(
    runtime: Runtime, stored: Stored, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = stored.message_ids[REPLIES // 2]
    poison(monkeypatch, bad)

    JobRuns(runtime).run(stored.job_ids)

    assert states(session) == {"processed": REPLIES - 1, "failed": 1}
    failed = session.get_one(InboundMessage, bad)
    assert failed.state == InboundState.FAILED
    assert "a fault in recording this one message" in (failed.error or "")
    # Nothing of the poisoned message was kept: no pending answer, no email.
    answered = set(session.scalars(select(OutgoingEmail.inbound_message_id)))
    assert answered == set(stored.message_ids) - {bad}
    # Its job is done: the failure is the message's, for an operator.
    assert set(session.scalars(select(Job.state).where(Job.id.in_(stored.job_ids)))) == {
        JobState.DONE
    }

    monkeypatch.undo()
    with runtime.sessions.begin() as writing:
        retry_inbound(writing, bad, now=runtime.clock(), actor="test")
    session.rollback()
    [retried] = session.scalars(
        select(Job.id).where(Job.kind == PROCESS_INBOUND, Job.state == JobState.PENDING)
    )
    JobRuns(runtime).run([retried])

    assert states(session) == {"processed": REPLIES}
    assert session.scalar(select(func.count()).select_from(PendingAnswer)) == REPLIES


def test_when_the_batch_transaction_fails_each_message_goes_alone(
    runtime: Runtime, stored: Stored, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_batch(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the batch's transaction failed")

    monkeypatch.setattr(inbound, "_record_batch", broken_batch)
    bad = stored.message_ids[0]
    poison(monkeypatch, bad)

    JobRuns(runtime).run(stored.job_ids)

    assert states(session) == {"processed": REPLIES - 1, "failed": 1}
    assert session.scalar(select(func.count()).select_from(PendingAnswer)) == REPLIES - 1


def test_a_redelivered_batch_processes_nothing_twice(
    runtime: Runtime, stored: Stored, session: Session
) -> None:
    runs = JobRuns(runtime)
    runs.run(stored.job_ids)
    assert not runs.run(stored.job_ids)
    inbound.process_inbound_messages(runtime, stored.message_ids)

    assert states(session) == {"processed": REPLIES}
    assert session.scalar(select(func.count()).select_from(PendingAnswer)) == REPLIES
    assert session.scalar(select(func.count()).select_from(OutgoingEmail)) == REPLIES


def test_the_dispatcher_groups_jobs_that_run_in_batches(runtime: Runtime) -> None:
    queue = JobQueue(runtime, threads=2)
    singles = [(1, "deliver_alert"), (2, "deliver_alert")]
    batched = [(n, PROCESS_INBOUND) for n in range(10, 10 + 3 * BATCH_SIZE)]
    try:
        messages = queue._messages(singles + batched)
    finally:
        queue.close()

    assert messages[:2] == [1, 2]
    groups = messages[2:]
    assert all(isinstance(group, list) for group in groups)
    assert [n for group in groups for n in group] == [n for n, _ in batched]  # type: ignore[union-attr]
    assert max(len(group) for group in groups) == BATCH_SIZE  # type: ignore[arg-type]


def test_the_worker_processes_the_replies_and_sends_each_confirm_once(
    runtime: Runtime, stored: Stored, session: Session, relay: CapturingRelay
) -> None:
    # One sender the relay refuses for good, one it asks to try later.
    relay.handler.refuse = {stored.senders[0]: "550 5.1.1 No such user"}
    worker = QueueWorker(runtime, poll_seconds=0.05)
    worker.start()
    try:
        relay.wait_for(REPLIES - 1, timeout=60)
        wait_until(
            lambda: states(session) == {"processed": REPLIES},
            timeout=60,
            what="every reply to be processed",
        )
    finally:
        worker.stop()

    assert sorted(r.recipients[0] for r in relay.received) == sorted(stored.senders[1:])
    session.rollback()
    emails = {
        recipient: state
        for recipient, state in session.execute(
            select(OutgoingEmail.recipient, OutgoingEmail.state)
        )
    }
    assert emails.pop(stored.senders[0]) == OutgoingState.FAILED
    assert set(emails.values()) == {OutgoingState.SENT}


def test_a_confirm_email_on_a_slow_relay_stays_held_past_its_first_lease(
    settings: Settings, stored: Stored, session: Session, relay: CapturingRelay
) -> None:
    """Real time: the relay takes 3 s over the email, the lease is 1 s, and
    the sender's renewals keep a second sender off it."""
    import dataclasses
    import threading
    from datetime import UTC, datetime, timedelta

    from mailflow.workers.outgoing import send_outgoing_emails

    short = dataclasses.replace(settings, send_lease_seconds=1.0)
    first, second = Runtime(short), Runtime(short)
    try:
        inbound.process_inbound_messages(first, stored.message_ids[:1])
        session.rollback()
        email = session.scalars(select(OutgoingEmail)).one()
        unclaimed = email.next_attempt_at
        relay.handler.delay_seconds = 3.0
        sender = threading.Thread(target=send_outgoing_emails, args=(first, [email.id]))
        sender.start()
        claims: list[datetime] = []

        def claimed() -> bool:
            session.rollback()
            claims.append(session.get_one(OutgoingEmail, email.id).next_attempt_at)
            return claims[-1] > unclaimed

        wait_until(claimed, timeout=10, what="the first sender to claim the email")
        wait_until(
            lambda: datetime.now(UTC) > claims[-1] + timedelta(seconds=0.5),
            timeout=10,
            what="the first lease to run out",
        )
        came_back = send_outgoing_emails(second, [email.id])[email.id]
        sender.join(timeout=30)
    finally:
        first.close()
        second.close()

    assert came_back is not None  # told to come back, not sent again
    assert [r.recipients for r in relay.received] == [[stored.senders[0]]]
    session.rollback()
    assert session.get_one(OutgoingEmail, email.id).state == OutgoingState.SENT


def test_a_database_error_in_the_batch_sends_each_message_again_alone(
    runtime: Runtime, stored: Stored, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadlock (or any error of the database's) is not the message's
    fault: nothing is marked failed for it."""
    from sqlalchemy.exc import OperationalError

    real_route = inbound.route
    raised: list[int] = []
    routed: list[int] = []

    def route(context: Any, kinds: Any, prepared: object) -> Any:
        routed.append(context.message.id)
        # After two messages of the batch are recorded (and rolled back).
        if not raised and len(routed) == 3:
            raised.append(context.message.id)
            raise OperationalError("UPDATE users", {}, Exception("deadlock detected"))
        return real_route(context, kinds, prepared)

    monkeypatch.setattr(inbound, "route", route)
    with captured_log("json") as log:
        JobRuns(runtime).run(stored.job_ids)

    assert raised and states(session) == {"processed": REPLIES}
    assert session.scalar(select(func.count()).select_from(PendingAnswer)) == REPLIES
    # One line for each message, once its outcome is committed: none for
    # the batch that was rolled back.
    lines = log.events("reply_processed")
    assert sorted(line["message_id"] for line in lines) == sorted(stored.message_ids)
    assert {line["state"] for line in lines} == {"processed"}


def test_a_reader_that_cannot_start_leaves_the_replies_for_a_later_try(
    runtime: Runtime, stored: Stored, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailflow.core.bounded_calls import ChildDidNotStart

    def no_child(*args: Any, **kwargs: Any) -> Any:
        raise ChildDidNotStart("no child process within 120 s")

    monkeypatch.setattr(inbound, "read_within_bound", no_child)
    JobRuns(runtime).run(stored.job_ids)

    assert states(session) == {"received": REPLIES}
    jobs = session.execute(select(Job.state, Job.last_error).where(Job.id.in_(stored.job_ids)))
    assert {(state, "ChildDidNotStart" in (error or "")) for state, error in jobs} == {
        (JobState.PENDING, True)
    }


def test_a_job_a_batch_handler_leaves_out_is_not_taken_as_done(
    runtime: Runtime, stored: Stored, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailflow.workers import job_kinds

    monkeypatch.setitem(job_kinds.BATCH_HANDLERS, PROCESS_INBOUND, lambda runtime, payloads: {})
    JobRuns(runtime).run(stored.job_ids)

    session.rollback()
    assert set(session.scalars(select(Job.state).where(Job.id.in_(stored.job_ids)))) == {
        JobState.PENDING
    }

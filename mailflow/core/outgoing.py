"""Emails other than alerts (welcomes, receipts, confirmation requests,
error replies): each is rendered when the change that needs it is
committed, in the same transaction, and sent by a job.  Each has its own
bounce key, so a delivery report about it marks it bounced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from mailflow.core import events, metrics
from mailflow.core.audit import record_event
from mailflow.core.jobs import add_job, new_job_values
from mailflow.core.leases import renew_lease
from mailflow.core.models import Base, Job, OutgoingEmail, OutgoingState
from mailflow.core.sending import SendPolicy, SendResult, Step, next_state

SEND_EMAIL = "send_email"


def queue_email(
    session: Session,
    *,
    kind: str,
    recipient: str,
    mail_from: str,
    raw: bytes,
    now: datetime,
    user_id: int | None = None,
    bounce_key: str | None = None,
    inbound_message_id: int | None = None,
) -> OutgoingEmail:
    email = OutgoingEmail(
        kind=kind,
        recipient=recipient,
        user_id=user_id,
        mail_from=mail_from,
        bounce_key=bounce_key,
        raw=raw,
        state=OutgoingState.QUEUED,
        attempts=0,
        next_attempt_at=now,
        inbound_message_id=inbound_message_id,
        created_at=now,
    )
    session.add(email)
    session.flush()
    add_job(session, SEND_EMAIL, {"outgoing_email_id": email.id}, now=now)
    return email


@dataclass(frozen=True)
class EmailToQueue:
    """An email ready to queue in bulk (``queue_emails``)."""

    kind: str
    recipient: str
    user_id: int | None
    mail_from: str
    bounce_key: str | None
    raw: bytes


# Core statements on the tables: many rows in a few round trips, without
# the ORM's unit of work (thousands of welcome emails from one import).
_OUTGOING = Base.metadata.tables[OutgoingEmail.__tablename__]
_INSERT_OUTGOING = insert(_OUTGOING).returning(_OUTGOING.c.id, sort_by_parameter_order=True)
_INSERT_JOBS = insert(Base.metadata.tables[Job.__tablename__])


def queue_emails(session: Session, emails: Sequence[EmailToQueue], *, now: datetime) -> list[int]:
    """Queue many emails, and a send job for each, in the caller's
    transaction; returns their ids in order."""
    if not emails:
        return []
    connection = session.connection()
    rows = [
        {
            "kind": e.kind,
            "recipient": e.recipient,
            "user_id": e.user_id,
            "mail_from": e.mail_from,
            "bounce_key": e.bounce_key,
            "raw": e.raw,
            "state": OutgoingState.QUEUED,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for e in emails
    ]
    ids = list(connection.execute(_INSERT_OUTGOING, rows).scalars())
    connection.execute(
        _INSERT_JOBS, [new_job_values(SEND_EMAIL, {"outgoing_email_id": i}, now=now) for i in ids]
    )
    return ids


def recent_count(session: Session, *, recipient: str, kinds: list[str], since: datetime) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                OutgoingEmail.recipient == recipient,
                OutgoingEmail.kind.in_(kinds),
                OutgoingEmail.created_at >= since,
            )
        )
        or 0
    )


def record_outgoing_result(
    session: Session, email: OutgoingEmail, result: SendResult, *, now: datetime, policy: SendPolicy
) -> datetime | None:
    """Record one try at sending the email.  Returns when to try again
    after a temporary failure, else None.  A deferred email stays queued
    with a later ``next_attempt_at``."""
    email.attempts += 1
    state = next_state(result, attempts=email.attempts, now=now, policy=policy)
    metrics.email_tried(session, state.step, email.kind)
    events.email_outcome(
        session,
        email.kind,
        email.id,
        email.recipient,
        result,
        state,
        user_id=email.user_id,
        attempts=email.attempts,
    )
    email.last_error = state.error
    if state.step is Step.SENT:
        email.state = OutgoingState.SENT
        email.sent_at = now
        _record(session, email, now, "email.sent", relay_reply=result.reply)
    elif state.step is Step.FAILED:
        email.state = OutgoingState.FAILED
        _record(session, email, now, "email.failed", error=state.error)
    elif state.next_attempt_at is not None:
        email.next_attempt_at = state.next_attempt_at
    return state.next_attempt_at


def _record(
    session: Session, email: OutgoingEmail, now: datetime, action: str, **details: object
) -> None:
    record_event(
        session,
        at=now,
        actor="worker",
        action=action,
        subject=f"email:{email.id}",
        kind=email.kind,
        **details,
    )


def claim_outgoing_emails(
    session: Session, email_ids: list[int], *, now: datetime, hold: timedelta
) -> list[int]:
    """Take the queued, due emails among ``email_ids`` for sending, in one
    UPDATE; returns their ids.  Those not due, or held by another sender
    (its hold runs until ``next_attempt_at``), are left."""
    return list(
        session.scalars(
            update(OutgoingEmail)
            .where(
                OutgoingEmail.id.in_(email_ids),
                OutgoingEmail.state == OutgoingState.QUEUED,
                OutgoingEmail.next_attempt_at <= now,
            )
            .values(next_attempt_at=now + hold)
            .returning(OutgoingEmail.id)
            .execution_options(synchronize_session=False)
        )
    )


def renew_outgoing_claims(
    session: Session, email_ids: list[int], *, now: datetime, until: datetime
) -> None:
    """Extend the hold on emails still being sent (a heartbeat)."""
    renew_lease(
        session,
        OutgoingEmail.next_attempt_at,
        email_ids,
        still_held=OutgoingEmail.state == OutgoingState.QUEUED,
        now=now,
        until=until,
    )


def find_by_bounce_key(session: Session, bounce_key: str) -> OutgoingEmail | None:
    return session.scalar(select(OutgoingEmail).where(OutgoingEmail.bounce_key == bounce_key))


def record_outgoing_bounce(
    session: Session, email: OutgoingEmail, *, description: str, now: datetime
) -> bool:
    """Mark the email bounced, with what the delivery report said.  False
    when it was already marked (a second report about the same email)."""
    first = email.bounced_at is None
    if first:
        metrics.email_bounced(session, email.kind)
    email.bounced_at = now
    email.last_error = description
    record_event(
        session,
        at=now,
        actor="inbound",
        action="email.bounced",
        subject=f"email:{email.id}",
        kind=email.kind,
        report=description,
    )
    return first


@dataclass(frozen=True)
class Bounce:
    at: datetime
    report: str


def latest_bounces(session: Session, *, kind: str, user_ids: list[int]) -> dict[int, Bounce]:
    """For each person whose latest email of this kind bounced, when and why."""
    latest: dict[int, tuple[datetime | None, str | None]] = {}
    # Columns only: the raw messages are not needed, and can be large.
    for user_id, bounced_at, error in session.execute(
        select(OutgoingEmail.user_id, OutgoingEmail.bounced_at, OutgoingEmail.last_error)
        .where(OutgoingEmail.kind == kind, OutgoingEmail.user_id.in_(user_ids))
        .order_by(OutgoingEmail.id)
    ):
        if user_id is not None:
            latest[user_id] = (bounced_at, error)
    return {
        user_id: Bounce(bounced_at, error or "")
        for user_id, (bounced_at, error) in latest.items()
        if bounced_at is not None
    }

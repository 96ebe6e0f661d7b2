"""The periodic task for access requests: one reminder to the deciders of
a request open for ``access_reminder_days``, and the end of a request not
decided by ``expires_at`` (its requester is told).  Each is a conditional
update written in the same transaction as its emails, so a pass run
twice, or by two processes at once, does each thing once."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.access.decision_emails import send_reminder
from mailflow.access.decision_outcome import tell_expired
from mailflow.config import Settings
from mailflow.core.audit import record_event
from mailflow.core.models import AccessRequest, AccessState
from mailflow.core.runtime import Runtime

# Requests handled per transaction: a long backlog is worked through in
# short transactions.
BATCH = 100


def access_requests_due(runtime: Runtime, now: datetime) -> list[str]:
    """Remind and expire what is due at ``now``; one line for each."""
    done: list[str] = []
    for step in (_expire, _remind):
        while True:
            with runtime.sessions.begin() as session:
                lines = step(session, runtime.settings, now)
            done.extend(lines)
            if len(lines) < BATCH:
                break
    return done


def _expire(session: Session, settings: Settings, now: datetime) -> list[str]:
    due = session.scalars(
        select(AccessRequest.id)
        .where(AccessRequest.state == AccessState.OPEN, AccessRequest.expires_at <= now)
        .order_by(AccessRequest.id)
        .limit(BATCH)
    ).all()
    lines = []
    for request_id in due:
        # Only the pass (or decision) that moves it from open does anything.
        moved = session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == request_id, AccessRequest.state == AccessState.OPEN)
            .values(state=AccessState.EXPIRED)
            .execution_options(synchronize_session=False)
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            continue
        request = session.get_one(AccessRequest, request_id)
        session.refresh(request)
        record_event(
            session,
            at=now,
            actor="scheduler",
            action="access.expired",
            subject=f"access_request:{request_id}",
        )
        tell_expired(session, settings, request=request, now=now)
        lines.append(f"access request {request_id} expired; requester told")
    return lines


def _remind(session: Session, settings: Settings, now: datetime) -> list[str]:
    cutoff = now - timedelta(days=settings.access_reminder_days)
    due = session.scalars(
        select(AccessRequest.id)
        .where(
            AccessRequest.state == AccessState.OPEN,
            AccessRequest.reminded_at.is_(None),
            AccessRequest.created_at <= cutoff,
            AccessRequest.expires_at > now,
        )
        .order_by(AccessRequest.id)
        .limit(BATCH)
    ).all()
    lines = []
    for request_id in due:
        marked = session.execute(
            update(AccessRequest)
            .where(
                AccessRequest.id == request_id,
                AccessRequest.state == AccessState.OPEN,
                AccessRequest.reminded_at.is_(None),
            )
            .values(reminded_at=now)
            .execution_options(synchronize_session=False)
        )
        if not marked.rowcount:  # type: ignore[attr-defined]
            continue
        request = session.get_one(AccessRequest, request_id)
        session.refresh(request)
        send_reminder(session, settings, request=request, now=now)
        lines.append(f"access request {request_id}: reminder sent")
    return lines

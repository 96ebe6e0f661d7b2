"""The periodic task for access requests: one reminder to the deciders of
a request open for ``access_reminder_days``, and the end of a request not
decided by ``expires_at`` (its requester is told).  Each is a conditional
update written in the same transaction as its emails, so a pass run
twice, or by two processes at once, does each thing once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.access.decision_emails import send_reminder
from mailflow.access.decision_outcome import tell_expired
from mailflow.config import Settings
from mailflow.core.audit import record_event
from mailflow.core.models import AccessRequest, AccessState
from mailflow.core.scheduling import SchedulerPass

log = logging.getLogger(__name__)

# Requests handled in one pass, each in a transaction of its own: a long
# backlog is worked through over several passes, and one request that
# cannot be handled (its email will not render) is logged and left for the
# next pass without holding back the others.
BATCH = 500

Find = Callable[[Session, Settings, datetime], Sequence[int]]
Act = Callable[[Session, Settings, int, datetime], str | None]


def access_requests_due(run: SchedulerPass) -> list[str]:
    """Remind and expire what is due at ``run.now``; one line for each."""
    runtime, now = run.runtime, run.now
    done: list[str] = []
    steps: tuple[tuple[str, Find, Act], ...] = (
        ("expire", _due_to_expire, _expire),
        ("remind", _due_for_reminder, _remind),
    )
    for name, find, act in steps:
        with run.reading() as session:
            due = find(session, runtime.settings, now)
        for request_id in due:
            try:
                with run.writing() as session:
                    line = act(session, runtime.settings, request_id, now)
            except Exception:
                log.exception(
                    "could not %s access request %s; next pass tries again", name, request_id
                )
                continue
            if line is not None:
                done.append(line)
    return done


def _due_to_expire(session: Session, settings: Settings, now: datetime) -> Sequence[int]:
    return session.scalars(
        select(AccessRequest.id)
        .where(AccessRequest.state == AccessState.OPEN, AccessRequest.expires_at <= now)
        .order_by(AccessRequest.id)
        .limit(BATCH)
    ).all()


def _expire(session: Session, settings: Settings, request_id: int, now: datetime) -> str | None:
    # Only the pass (or decision) that moves it from open does anything.
    moved = session.execute(
        update(AccessRequest)
        .where(AccessRequest.id == request_id, AccessRequest.state == AccessState.OPEN)
        .values(state=AccessState.EXPIRED)
        .execution_options(synchronize_session=False)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        return None
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
    return f"access request {request_id} expired; requester told"


def _due_for_reminder(session: Session, settings: Settings, now: datetime) -> Sequence[int]:
    cutoff = now - timedelta(days=settings.access_reminder_days)
    return session.scalars(
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


def _remind(session: Session, settings: Settings, request_id: int, now: datetime) -> str | None:
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
        return None
    request = session.get_one(AccessRequest, request_id)
    session.refresh(request)
    send_reminder(session, settings, request=request, now=now)
    return f"access request {request_id}: reminder sent"

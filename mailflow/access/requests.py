"""Confirmed access requests: a person asks to answer for an organisation.

A request is kept here only once its person has confirmed it with their
second factor (by email it is a pending action until then); from here it
goes to the organisation's administrators.  No I/O; the clock is passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.audit import record_event
from mailflow.core.models import AccessRequest, AccessState, Organisation, User

MAX_REASON_LENGTH = 1000


def open_request(
    session: Session,
    settings: Settings,
    *,
    requester: User,
    organisation: Organisation,
    reason: str,
    via: str,
    now: datetime,
    actor: str,
) -> AccessRequest:
    """Record a confirmed request, open for a decision until it expires."""
    request = AccessRequest(
        requester_id=requester.id,
        organisation_id=organisation.id,
        reason=reason.strip()[:MAX_REASON_LENGTH],
        via=via,
        state=AccessState.OPEN,
        created_at=now,
        expires_at=now + timedelta(days=settings.access_request_days),
        to_service_desk=False,
    )
    session.add(request)
    session.flush()
    record_event(
        session,
        at=now,
        actor=actor,
        action="access.requested",
        subject=f"access_request:{request.id}",
        requester=f"user:{requester.id}",
        organisation=organisation.code,
        via=via,
    )
    return request


def open_request_for(
    session: Session, *, requester_id: int, organisation_id: int
) -> AccessRequest | None:
    """The person's open request for the organisation, if one."""
    return session.scalar(
        select(AccessRequest).where(
            AccessRequest.requester_id == requester_id,
            AccessRequest.organisation_id == organisation_id,
            AccessRequest.state == AccessState.OPEN,
        )
    )

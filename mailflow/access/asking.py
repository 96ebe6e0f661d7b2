"""Asking for access, whichever way it comes (a confirmed email request,
the page, the service desk's command): who may ask for which
organisation, and opening the request and sending it to its deciders in
the caller's transaction.  No I/O; the clock is passed in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access.decision_emails import send_to_deciders
from mailflow.access.requests import open_request, open_request_for
from mailflow.config import Settings
from mailflow.core.errors import NotAllowed
from mailflow.core.models import AccessRequest, Membership, Organisation, Role, User
from mailflow.people.users import lock_person


def held_organisation_ids(session: Session, user_id: int) -> set[int]:
    """The organisations the person answers for (alert-only does not)."""
    rows = session.scalars(
        select(Membership.organisation_id)
        .where(Membership.user_id == user_id)
        .where(Membership.role != Role.ALERT_ONLY)
    )
    return set(rows)


def why_not(session: Session, person: User, org: Organisation) -> str | None:
    """Why this person may not ask for this organisation, or None."""
    if not org.is_open:
        return f"{org.code} ({org.name}) is closed."
    if org.id in held_organisation_ids(session, person.id):
        return f"{person.email} already answers for {org.code} ({org.name})."
    if open_request_for(session, requester_id=person.id, organisation_id=org.id):
        return (
            f"{person.email} has already asked to answer for {org.code} ({org.name}): "
            "its administrators are deciding."
        )
    return None


def refusals(session: Session, person: User, organisations: Sequence[Organisation]) -> list[str]:
    """Why not, for each organisation that may not be asked for."""
    return [r for r in (why_not(session, person, o) for o in organisations) if r is not None]


def ask_for_access(
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
    """Open a confirmed request and send it to its deciders; NotAllowed
    (nothing written) when the person may not ask for it."""
    if not requester.active:
        raise NotAllowed(f"{requester.email} has been removed.")
    # One at a time per person (on PostgreSQL; SQLite's writers take turns):
    # the same request confirmed by email and on the page at one moment
    # opens once.
    lock_person(session, requester.id)
    problem = why_not(session, requester, organisation)
    if problem is not None:
        raise NotAllowed(problem)
    request = open_request(
        session,
        settings,
        requester=requester,
        organisation=organisation,
        reason=reason,
        via=via,
        now=now,
        actor=actor,
    )
    send_to_deciders(session, settings, request=request, now=now)
    return request

"""The welcome email, worded for what the person will do: those who answer
alerts get a link (single use, seven days) to set up an authenticator app;
auditors get one to open the reports behind a link; alert-only contacts
only read alerts, so they get no link at all.  It is sent when a person is
added or their second factor is reset.  When it bounces, the
administrators of the person's organisations are told."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.errors import InvalidInput
from mailflow.core.mail.one_off import one_off_to_queue, send_one_off
from mailflow.core.models import (
    Membership,
    NationalRole,
    Organisation,
    Role,
    User,
)
from mailflow.core.outgoing import EmailToQueue
from mailflow.core.second_factor.mfa import is_enrolled
from mailflow.people.users import administrators_of, normalise_email

WELCOME_KIND = "welcome"
WELCOME_BOUNCED_KIND = "welcome_bounced"

# Strongest first: a person holding several roles is welcomed for the one
# that asks most of them.
ROLE_STRENGTH = (
    Role.ADMINISTRATOR.value,
    Role.RESPONDER.value,
    NationalRole.AUDITOR.value,
    Role.ALERT_ONLY.value,
)


def enrolment_link(settings: Settings, user_id: int, now: datetime | None = None) -> str:
    # The nonce makes each email's link its own, so using one does not use
    # up a later one (after a reset); the issue time lets a reset retire
    # every link sent before it.
    now = now or datetime.now(UTC)
    payload = {"u": user_id, "n": secrets.token_urlsafe(12), "i": int(now.timestamp())}
    return links.make(settings, links.ENROL_LINK, payload, now)


def strongest_role(session: Session, user: User) -> str:
    """The role the welcome is worded for (alert-only for a person with no
    role left)."""
    held = {
        str(role)
        for role in session.scalars(select(Membership.role).where(Membership.user_id == user.id))
    }
    if user.national_role:
        held.add(str(user.national_role))
    return next((role for role in ROLE_STRENGTH if role in held), Role.ALERT_ONLY.value)


def role_held_by(session: Session, email: str) -> str | None:
    """The strongest role of the active person with this address, before
    a change; None when there is no such person (or no such address)."""
    try:
        address = normalise_email(email)
    except InvalidInput:
        return None
    user = session.scalar(select(User).where(User.email == address, User.active.is_(True)))
    return None if user is None else strongest_role(session, user)


def raised_from_alert_only(session: Session, user: User, before: str | None) -> bool:
    """Whether a person who held only alert-only roles (``before``), and so
    was never sent a link to set up an authenticator app, now holds a role
    that needs one and has no app set up: their welcome is due now."""
    if before != Role.ALERT_ONLY or strongest_role(session, user) == Role.ALERT_ONLY:
        return False
    return not is_enrolled(session, user.id)


def _organisations(session: Session, user: User) -> list[Organisation]:
    return list(
        session.scalars(
            select(Organisation)
            .join(Membership, Membership.organisation_id == Organisation.id)
            .where(Membership.user_id == user.id)
            .order_by(Organisation.code)
        )
    )


def queue_welcome_email(
    session: Session, settings: Settings, *, user: User, now: datetime, reset: bool = False
) -> str | None:
    """Queue, in the caller's transaction, the person's welcome email;
    returns its enrolment link, or None when their role needs none."""
    role = strongest_role(session, user)
    link = None if role == Role.ALERT_ONLY else enrolment_link(settings, user.id, now)
    send_one_off(
        session,
        settings,
        template="welcome",
        context=welcome_context(user, role, _organisations(session, user), link, now, reset),
        to=user,
        kind=WELCOME_KIND,
        now=now,
    )
    return link


def welcome_to_queue(
    settings: Settings,
    *,
    user: User,
    roles: Collection[str],
    organisations: list[Organisation],
    now: datetime,
) -> EmailToQueue:
    """The welcome of a person added with these roles at these
    organisations (sorted by code), ready to queue with many others: an
    import knows what it gave each person, so asks the database nothing."""
    role = next((r for r in ROLE_STRENGTH if r in roles), Role.ALERT_ONLY.value)
    link = None if role == Role.ALERT_ONLY else enrolment_link(settings, user.id, now)
    return one_off_to_queue(
        settings,
        template="welcome",
        context=welcome_context(user, role, organisations, link, now, reset=False),
        to=user,
        kind=WELCOME_KIND,
        now=now,
    )


def welcome_context(
    user: User,
    role: str,
    organisations: list[Organisation],
    link: str | None,
    now: datetime,
    reset: bool,
) -> dict[str, object]:
    return {
        "recipient_name": user.name,
        "role": role,
        "organisations": organisations,
        "link": link,
        "expires_at": now + links.ENROL_LINK_LIFETIME,
        "reset": reset,
    }


def queue_welcome_bounced_notices(
    session: Session, settings: Settings, *, user: User, report: str, now: datetime
) -> int:
    """Tell the administrators of the person's organisations that their
    welcome email bounced (the address is probably mistyped); returns how
    many were told."""
    organisations = {o.id: o for o in _organisations(session, user)}
    administered: dict[int, tuple[User, list[Organisation]]] = {}
    for admin, org_id in administrators_of(session, organisations, besides=user.id):
        administered.setdefault(admin.id, (admin, []))[1].append(organisations[org_id])
    for admin, theirs in administered.values():
        send_one_off(
            session,
            settings,
            template="welcome_bounced",
            context={
                "recipient_name": admin.name,
                "person_name": user.name,
                "person_email": user.email,
                # Only the organisations this administrator looks after.
                "organisations": sorted(theirs, key=lambda o: o.code),
                "report": report,
            },
            to=admin,
            kind=WELCOME_BOUNCED_KIND,
            now=now,
        )
    return len(administered)

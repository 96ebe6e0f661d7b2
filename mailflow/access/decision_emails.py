"""The email every administrator of an organisation gets about a confirmed
access request, with Approve and Deny links and a reply form (and the
one reminder).  With no active administrator it goes to the service desk
(``MAILFLOW_SERVICE_DESK``), who decides with the command line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access.decision_lines import FORM_LINES
from mailflow.access.decision_links import Verb, decision_link, new_decision_key
from mailflow.config import Settings
from mailflow.core.mail.one_off import send_one_off, send_one_off_to_address
from mailflow.core.models import AccessRequest, Membership, Organisation, User
from mailflow.people.users import administrators_of

DECIDE_KIND = "access_decide"
REMINDER_KIND = "access_decide_reminder"
SERVICE_DESK_NAME = "Service desk"


@dataclass(frozen=True)
class Asker:
    """The person who asks, as the administrators see them."""

    name: str
    email: str
    organisations: list[str]


def asker(session: Session, request: AccessRequest) -> Asker:
    user = session.get_one(User, request.requester_id)
    held = session.scalars(
        select(Organisation)
        .join(Membership, Membership.organisation_id == Organisation.id)
        .where(Membership.user_id == user.id)
        .order_by(Organisation.code)
    )
    return Asker(user.name, user.email, [f"{o.name} ({o.code})" for o in held])


def deciders(session: Session, request: AccessRequest) -> list[User]:
    """The active administrators who decide the request (never its
    requester)."""
    pairs = administrators_of(session, [request.organisation_id], besides=request.requester_id)
    return [user for user, _ in pairs]


def send_to_deciders(
    session: Session, settings: Settings, *, request: AccessRequest, now: datetime
) -> None:
    """Queue, in the caller's transaction, the decision email to every
    active administrator of the request's organisation (or, with none, to
    MAILFLOW_SERVICE_DESK, and the request says so)."""
    _send(session, settings, request=request, now=now, reminder=False)


def send_reminder(
    session: Session, settings: Settings, *, request: AccessRequest, now: datetime
) -> None:
    """The same email again, saying it is a reminder (the periodic task
    sends it once, marking the request in the same transaction)."""
    _send(session, settings, request=request, now=now, reminder=True)


def _send(
    session: Session,
    settings: Settings,
    *,
    request: AccessRequest,
    now: datetime,
    reminder: bool,
) -> None:
    organisation = session.get_one(Organisation, request.organisation_id)
    common: dict[str, object] = {
        "request": request,
        "organisation": organisation,
        "asker": asker(session, request),
        "reason": request.reason,
        "expires_at": request.expires_at,
        "form_lines": FORM_LINES,
        "reminder": reminder,
    }
    kind = REMINDER_KIND if reminder else DECIDE_KIND
    administrators = deciders(session, request)
    if not administrators:
        request.to_service_desk = True
        # The service desk is an address, not a person of ours: no links.
        send_one_off_to_address(
            session,
            settings,
            template="access_decide",
            context=common | {"recipient_name": SERVICE_DESK_NAME, "service_desk": True},
            to=settings.service_desk,
            kind=kind,
            now=now,
            their_message_id=None,
        )
        return
    for administrator in administrators:
        key = new_decision_key(session, request=request, administrator=administrator, now=now)
        links = {
            verb: decision_link(settings, request.id, administrator.id, verb, now) for verb in Verb
        }
        send_one_off(
            session,
            settings,
            template="access_decide",
            context=common
            | {
                "recipient_name": administrator.name,
                "service_desk": False,
                "approve_link": links[Verb.APPROVE],
                "deny_link": links[Verb.DENY],
            },
            to=administrator,
            kind=kind,
            now=now,
            reply_key=key,
        )

"""Administrators changing their organisation's people: checking a list
of changes for one administrator, and applying them all in the commit's
transaction (after the second factor).

Rules: only an administrator of the organisation may change its people;
the last active administrator can be neither removed nor demoted (checked
when committing, with the organisations' rows locked, so two changes
committed at once cannot both pass); a new person gets the welcome email;
a removed person's outstanding pending actions for that organisation stop
at once (and every one of them, with their open access requests, when it
was their last role).  Every change is audited with the administrator as
actor.  No I/O; the clock is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.access.people_lines import LineProblem, PeopleLine, Verb, render_line
from mailflow.config import Settings
from mailflow.core import pending
from mailflow.core.audit import record_event
from mailflow.core.errors import NotAllowed
from mailflow.core.models import (
    AccessRequest,
    AccessState,
    Confirmation,
    Membership,
    MfaCredential,
    Organisation,
    PendingAction,
    PendingAnswer,
    Role,
    User,
)
from mailflow.people.users import add_user, remove_user
from mailflow.people.welcome_email import queue_welcome_email


def actor_of(user_id: int) -> str:
    return f"user:{user_id}"


def administered(session: Session, user_id: int) -> list[Organisation]:
    """The open organisations the active person administers, by code."""
    return list(
        session.scalars(
            select(Organisation)
            .join(Membership, Membership.organisation_id == Organisation.id)
            .join(User, User.id == Membership.user_id)
            .where(
                Membership.user_id == user_id,
                Membership.role == Role.ADMINISTRATOR,
                User.active.is_(True),
                Organisation.closed_on.is_(None),
            )
            .order_by(Organisation.code)
        )
    )


def name_organisations(
    lines: Sequence[PeopleLine], administered_codes: Sequence[str], default: str | None = None
) -> tuple[list[PeopleLine], list[LineProblem]]:
    """Each line with its organisation: the code it names, else ``default``
    (the organisation the email replied to was about), else the one the
    person administers.  A code they do not administer is a problem, and
    so is a line without one from someone who administers several."""
    named, problems = [], []
    for line in lines:
        code = line.code or default or _only(administered_codes)
        if code is None:
            problems.append(
                LineProblem(
                    line.line,
                    render_line(line),
                    "you administer several organisations: start the line with the code, "
                    f"e.g. {administered_codes[0]}: {render_line(line)}",
                )
            )
        elif code not in administered_codes:
            problems.append(
                LineProblem(line.line, render_line(line), f"you are not an administrator of {code}")
            )
        else:
            named.append(replace(line, code=code))
    return named, problems


def _only(codes: Sequence[str]) -> str | None:
    return codes[0] if len(codes) == 1 else None


@dataclass(frozen=True)
class Person:
    """One person of an organisation, as the list and the page show them."""

    user: User
    role: Role
    enrolled: bool
    since: datetime
    granted_by: str | None


def people_of(session: Session, organisation_id: int) -> list[Person]:
    """The organisation's active people, their roles, and whether each has
    set up their second factor."""
    rows = session.execute(
        select(User, Membership, MfaCredential.enrolled_at)
        .join(Membership, Membership.user_id == User.id)
        .outerjoin(MfaCredential, MfaCredential.user_id == User.id)
        .where(Membership.organisation_id == organisation_id, User.active.is_(True))
        .order_by(User.email)
    ).all()
    granters = {
        u.id: u.email
        for u in session.scalars(
            select(User).where(
                User.id.in_([m.granted_by_id for _, m, _ in rows if m.granted_by_id])
            )
        )
    }
    return [
        Person(user, m.role, enrolled is not None, m.created_at, granters.get(m.granted_by_id or 0))
        for user, m, enrolled in rows
    ]


def open_requests_for(session: Session, organisation_id: int) -> list[tuple[AccessRequest, User]]:
    """The organisation's open access requests, oldest first, with who asks."""
    return [
        (request, user)
        for request, user in session.execute(
            select(AccessRequest, User)
            .join(User, User.id == AccessRequest.requester_id)
            .where(
                AccessRequest.organisation_id == organisation_id,
                AccessRequest.state == AccessState.OPEN,
            )
            .order_by(AccessRequest.created_at)
        )
    ]


@dataclass(frozen=True)
class Applied:
    """What a commit changed: one sentence per change, and the new people."""

    done: list[str]
    welcomed: list[str]


def apply_changes(
    session: Session,
    settings: Settings,
    *,
    administrator_id: int,
    changes: Sequence[PeopleLine],
    now: datetime,
) -> Applied:
    """Apply every change, in the caller's (the commit's) transaction; a
    change that cannot be made raises NotAllowed, and the caller undoes
    them all."""
    codes = sorted({str(c.code) for c in changes if c.verb is not Verb.LIST})
    organisations = _lock_organisations(session, codes)
    admin = session.get(User, administrator_id)
    if admin is None or not admin.active:
        raise NotAllowed("you are no longer an active user")
    theirs = {o.code for o in administered(session, administrator_id)}
    for code in codes:
        if code not in theirs:
            raise NotAllowed(f"you are not an administrator of {code} any more")
    done, welcomed = [], []
    for change in changes:
        if change.verb is Verb.LIST:
            continue
        organisation = organisations[str(change.code)]
        welcome = _apply(session, settings, admin, organisation, change, now)
        done.append(change.describe())
        if welcome is not None:
            welcomed.append(welcome)
    for organisation in organisations.values():
        if not _active_administrators(session, organisation.id):
            raise NotAllowed(
                f"{organisation.code} would have no active administrator: "
                "add another administrator first"
            )
    return Applied(done, welcomed)


def _lock_organisations(session: Session, codes: Sequence[str]) -> dict[str, Organisation]:
    """The organisations' rows, locked (in code order, so two commits never
    wait on each other in a circle) until the transaction ends: the
    last-administrator check then sees every other commit's outcome."""
    found = {
        o.code: o
        for o in session.scalars(
            select(Organisation)
            .where(Organisation.code.in_(list(codes)))
            .order_by(Organisation.code)
            .with_for_update()
        )
    }
    missing = [c for c in codes if c not in found]
    if missing:
        raise NotAllowed(f"{', '.join(missing)} is not a known organisation")
    # SQLite has no row locks: make this a write transaction now, so two
    # commits take turns from here rather than both reading first.
    for organisation in found.values():
        session.execute(
            update(Organisation)
            .where(Organisation.id == organisation.id)
            .values(updated_at=Organisation.updated_at)
        )
    return found


def _active_administrators(session: Session, organisation_id: int) -> list[int]:
    return list(
        session.scalars(
            select(User.id)
            .join(Membership, Membership.user_id == User.id)
            .where(
                Membership.organisation_id == organisation_id,
                Membership.role == Role.ADMINISTRATOR,
                User.active.is_(True),
            )
        )
    )


def _active_person(session: Session, email: str) -> bool:
    found = session.scalar(
        select(User.id).where(User.email == email.lower(), User.active.is_(True))
    )
    return found is not None


def _membership(session: Session, email: str, organisation_id: int) -> Membership | None:
    return session.scalar(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(
            User.email == email,
            User.active.is_(True),
            Membership.organisation_id == organisation_id,
        )
    )


def _apply(
    session: Session,
    settings: Settings,
    admin: User,
    organisation: Organisation,
    change: PeopleLine,
    now: datetime,
) -> str | None:
    """Make one change; returns the address of a person to welcome."""
    actor = actor_of(admin.id)
    email = str(change.email)
    if change.verb is Verb.ADD:
        added = add_user(
            session,
            email=email,
            # A person who is already here keeps their name: one
            # organisation's administrator must not rename another's people.
            name=None if _active_person(session, email) else change.name,
            role=str(change.role),
            org_code=organisation.code,
            now=now,
            actor=actor,
        )
        membership = _membership(session, added.user.email, organisation.id)
        assert membership is not None
        membership.granted_by_id = admin.id
        if added.created or added.reactivated:
            queue_welcome_email(session, settings, user=added.user, now=now)
            return added.user.email
        return None
    membership = _membership(session, email, organisation.id)
    if membership is None:
        raise NotAllowed(f"{email} holds no role at {organisation.code}")
    if change.verb is Verb.ROLE:
        before = membership.role
        membership.role = Role(str(change.role))
        membership.granted_by_id = admin.id
        record_event(
            session,
            at=now,
            actor=actor,
            action="user.role_changed",
            subject=f"user:{membership.user_id}",
            organisation=organisation.code,
            role=str(change.role),
            before=str(before),
        )
        return None
    remove_from(
        session, user_id=membership.user_id, organisation=organisation, now=now, actor=actor
    )
    return None


def remove_from(
    session: Session, *, user_id: int, organisation: Organisation, now: datetime, actor: str
) -> None:
    """Take away the person's role at the organisation, and with it every
    pending action of theirs about it; if it was their last role, they
    are deactivated as ``remove_user`` does, and every pending action and
    open access request of theirs ends."""
    user = session.get_one(User, user_id)
    remove_user(session, email=user.email, org_code=organisation.code, now=now, actor=actor)
    session.flush()
    if user.memberships or user.national_role is not None:
        pending.supersede(_open_actions_about(session, user.id, organisation.id), now=now)
        return
    remove_user(session, email=user.email, org_code=None, now=now, actor=actor)
    pending.supersede(_open_actions(session, user.id), now=now)
    withdraw_requests(session, user_id=user.id, now=now, actor=actor)


def _open_actions(session: Session, user_id: int) -> list[PendingAction]:
    return list(
        session.scalars(
            select(PendingAction).where(
                PendingAction.user_id == user_id,
                PendingAction.used_at.is_(None),
                PendingAction.superseded_at.is_(None),
            )
        )
    )


def _open_actions_about(
    session: Session, user_id: int, organisation_id: int
) -> Iterable[PendingAction]:
    """The person's open pending actions about one organisation: answers
    read from a reply that include it, and actions whose payload names it
    ("o", the convention of the access and people links)."""
    answering = set(
        session.scalars(
            select(Confirmation.id)
            .join(PendingAnswer, PendingAnswer.confirmation_id == Confirmation.id)
            # A confirmation is a pending action of the same id.
            .join(PendingAction, PendingAction.id == Confirmation.id)
            .where(
                PendingAnswer.organisation_id == organisation_id,
                PendingAction.user_id == user_id,
                PendingAction.used_at.is_(None),
            )
        )
    )
    for action in _open_actions(session, user_id):
        payload = action.payload or {}
        if action.id in answering or payload.get("o") == organisation_id:
            yield action


def withdraw_requests(session: Session, *, user_id: int, now: datetime, actor: str) -> None:
    """End the person's open access requests: they were removed."""
    requests = session.scalars(
        select(AccessRequest).where(
            AccessRequest.requester_id == user_id, AccessRequest.state == AccessState.OPEN
        )
    )
    for request in requests:
        request.state = AccessState.WITHDRAWN
        request.decided_at = now
        record_event(
            session,
            at=now,
            actor=actor,
            action="access.withdrawn",
            subject=f"access_request:{request.id}",
            reason="the requester was removed",
        )

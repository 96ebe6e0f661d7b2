"""People and the organisations they act for."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from mailflow.core.audit import record_event
from mailflow.core.errors import InvalidInput, NotFound
from mailflow.core.models import DigestSchedule, Membership, NationalRole, Role, User
from mailflow.core.second_factor.mfa import reset_mfa
from mailflow.people.organisations import find_organisation

MAX_NAME_LENGTH = 200
ROLE_NAMES = [r.value for r in Role] + [r.value for r in NationalRole]


def normalise_email(address: str) -> str:
    """Check an address's form (not whether it receives mail) and return
    it lower-cased."""
    try:
        checked = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput("email", f"{address!r} is not a valid address: {exc}") from exc
    return checked.normalized.lower()


def get_user(session: Session, email: str) -> User:
    """The person with this address, active or not; NotFound if none."""
    address = normalise_email(email)
    user = session.scalar(select(User).where(User.email == address))
    if user is None:
        raise NotFound(f"no user {address}")
    return user


@dataclass(frozen=True)
class AddedUser:
    user: User
    created: bool
    # A removed person added again: like a new one, they need a welcome
    # email to set up an authenticator app (removal cleared theirs).
    reactivated: bool = False


def checked_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidInput("name", f"give a name of 1 to {MAX_NAME_LENGTH} characters")
    # Names go into email headers: no line breaks or other controls.
    if any(not c.isprintable() for c in name):
        raise InvalidInput("name", "the name contains control characters")
    return name


def add_user(
    session: Session,
    *,
    email: str,
    name: str | None,
    role: str,
    org_code: str | None,
    now: datetime,
    actor: str,
    digest: DigestSchedule | None = None,
) -> AddedUser:
    """Add a person, or give an existing one a role at another organisation.

    Organisation roles need ``org_code``; the auditor role is national and
    takes none, and may say how often its holder wants a digest (by
    default daily).
    """
    address = normalise_email(email)
    if role not in ROLE_NAMES:
        raise InvalidInput("role", f"{role!r} is not a role (one of {', '.join(ROLE_NAMES)})")
    if digest is not None and role != NationalRole.AUDITOR:
        raise InvalidInput("digest", NOT_AN_AUDITOR)
    name = checked_name(name)

    user = session.scalar(select(User).where(User.email == address))
    created = user is None
    reactivated = user is not None and not user.active
    if user is None:
        if name is None:
            raise InvalidInput("name", "a new user needs a name (--name)")
        user = User(email=address, name=name, active=True, created_at=now)
        session.add(user)
    else:
        if name is not None:
            user.name = name
        user.active = True

    if role == NationalRole.AUDITOR:
        if org_code is not None:
            raise InvalidInput("org", "auditors are national: give no organisation")
        user.national_role = NationalRole.AUDITOR
        if digest is not None:
            user.digest = digest
        session.flush()
        record_event(
            session,
            at=now,
            actor=actor,
            action="user.role_granted",
            subject=f"user:{user.id}",
            email=address,
            role=role,
            **({"digest": digest.value} if digest is not None else {}),
        )
        return AddedUser(user, created, reactivated)

    if org_code is None:
        raise InvalidInput("org", f"the {role} role is held for an organisation: give --org CODE")
    org = find_organisation(session, org_code)
    if org is None:
        raise InvalidInput("org", f"{org_code!r} is not a known organisation")
    if not org.is_open:
        raise InvalidInput("org", f"{org.code} ({org.name}) is closed")

    membership = next((m for m in user.memberships if m.organisation_id == org.id), None)
    if membership is None:
        user.memberships.append(Membership(organisation_id=org.id, role=Role(role), created_at=now))
    else:
        membership.role = Role(role)
    session.flush()
    record_event(
        session,
        at=now,
        actor=actor,
        action="user.role_granted",
        subject=f"user:{user.id}",
        email=address,
        role=role,
        organisation=org.code,
    )
    return AddedUser(user, created, reactivated)


NOT_AN_AUDITOR = "only auditors are sent digests: --digest goes with --role auditor"


def set_digest(
    session: Session, *, email: str, schedule: DigestSchedule, now: datetime, actor: str
) -> User:
    """Change how often an active auditor is sent a digest."""
    user = get_user(session, email)
    if not user.active or user.national_role != NationalRole.AUDITOR:
        raise InvalidInput("digest", f"{user.email} is not an auditor: only auditors get digests")
    user.digest = schedule
    record_event(
        session,
        at=now,
        actor=actor,
        action="user.digest_changed",
        subject=f"user:{user.id}",
        email=user.email,
        digest=schedule.value,
    )
    return user


def remove_user(
    session: Session, *, email: str, org_code: str | None, now: datetime, actor: str
) -> User:
    """Take away a role at one organisation, or (without ``org_code``) every
    role: the person is then inactive.  The row stays, because deliveries,
    answers and the audit log name them."""
    user = get_user(session, email)
    address = user.email
    if org_code is not None:
        org = find_organisation(session, org_code)
        membership = next(
            (m for m in user.memberships if org is not None and m.organisation_id == org.id), None
        )
        if membership is None:
            raise NotFound(f"{address} holds no role at {org_code.upper()}")
        user.memberships.remove(membership)
        record_event(
            session,
            at=now,
            actor=actor,
            action="user.role_removed",
            subject=f"user:{user.id}",
            organisation=org_code.upper(),
        )
        return user
    user.memberships.clear()
    user.national_role = None
    user.active = False
    # Should they be added again, they start afresh: a new authenticator
    # app, and none of the links sent to them before today.
    user.links_valid_after = now
    reset_mfa(session, user_id=user.id, now=now, actor=actor)
    record_event(session, at=now, actor=actor, action="user.deactivated", subject=f"user:{user.id}")
    return user


def lock_person(session: Session, user_id: int) -> None:
    """Lock the person's row for the rest of the transaction (on PostgreSQL;
    SQLite's write transactions already take turns), so that limits counted
    per person (emails an hour) hold when jobs run at once."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


def list_users(session: Session, *, org_code: str | None = None) -> list[User]:
    return [user for page in users_in_pages(session, org_code=org_code) for user in page]


USERS_PAGE = 500


def users_in_pages(
    session: Session, *, org_code: str | None = None, page_size: int | None = None
) -> Iterator[list[User]]:
    """Active people (of one organisation, or all) by address, a page at
    a time with their roles, so that a list of tens of thousands is
    printed as it is read, in bounded memory.  An unknown organisation is
    refused at once, before anything is printed."""
    query = (
        select(User)
        .where(User.active.is_(True))
        .options(selectinload(User.memberships).selectinload(Membership.organisation))
        .order_by(User.email)
    )
    if org_code is not None:
        org = find_organisation(session, org_code)
        if org is None:
            raise InvalidInput("org", f"{org_code!r} is not a known organisation")
        query = query.where(User.memberships.any(Membership.organisation_id == org.id))
    return _pages(session, query.limit(page_size or USERS_PAGE), page_size or USERS_PAGE)


def _pages(session: Session, query: Select[User], page_size: int) -> Iterator[list[User]]:
    after: str | None = None
    while True:
        page = list(session.scalars(query if after is None else query.where(User.email > after)))
        if page:
            yield page
        if len(page) < page_size:
            return
        # The session holds loaded people weakly: pages already printed
        # are let go.
        after = page[-1].email


def administrators_of(
    session: Session, organisation_ids: Collection[int], *, besides: int
) -> list[tuple[User, int]]:
    """The active administrators of these organisations other than the
    person ``besides`` (who is told otherwise), each with the organisation
    they administer: one pair for each, in the order of the people."""
    rows = session.execute(
        select(User, Membership.organisation_id)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.organisation_id.in_(list(organisation_ids)),
            Membership.role == Role.ADMINISTRATOR,
            User.active.is_(True),
            User.id != besides,
        )
        .order_by(User.id)
    )
    return [(user, organisation_id) for user, organisation_id in rows]

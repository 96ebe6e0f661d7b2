"""Adding many people at once, from the rows of a people file
(people_files): in one transaction, with lookups and inserts in bulk, so
that thousands take seconds.

What a row does, decided for every row before anything is written (the
caller commits only if this returns, so a file is imported whole or not
at all):

* a new person: added with the roles their rows give, and welcomed once
  (one email, worded for the strongest role, naming every organisation);
* a person already here, active, who does not hold a role at that
  organisation (or the auditor role): given it, as `users add` would, but
  not welcomed again (they already have their link), and their name is
  kept (a file does not rename anyone: `users add --name` does); except
  that one who held only alert-only roles, and so was never sent a link,
  is welcomed with one when given a role that needs it;
* a person who already holds exactly that role there: unchanged (counted),
  so importing the same file again changes nothing;
* an error, naming the line: an unknown or closed organisation; a person
  who holds a *different* role there (a file does not change roles: that
  is `users add`, one at a time, on purpose); a person who was removed
  (they come back through `users add`, with a fresh welcome); the same
  person and organisation twice in the file; one new person given two
  names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import AuditEvent, Membership, NationalRole, Organisation, Role, User
from mailflow.core.outgoing import queue_emails
from mailflow.people.people_files import PeopleFile, PersonRow, Problems
from mailflow.people.welcome_email import (
    queue_welcome_email,
    raised_from_alert_only,
    welcome_to_queue,
)

# Lookups by many keys go in slices: SQLite takes at most 32,766
# parameters in a statement.
LOOKUP_SLICE = 1_000

T = TypeVar("T")


@dataclass
class PeopleImported:
    added: int = 0
    roles_added: int = 0
    unchanged: int = 0
    welcomes: int = 0


@dataclass
class Known:
    """A person already here, as far as an import needs to know."""

    id: int
    active: bool
    national_role: NationalRole | None
    roles: dict[int, Role] = field(default_factory=dict)


@dataclass
class NewPerson:
    name: str
    line: int
    grants: list[PersonRow] = field(default_factory=list)


@dataclass
class Plan:
    new: dict[str, NewPerson] = field(default_factory=dict)
    # Roles for people already here, with their ids.
    grants: list[tuple[int, PersonRow]] = field(default_factory=list)
    unchanged: int = 0


def import_people(
    session: Session,
    settings: Settings,
    people_file: PeopleFile,
    *,
    now: datetime,
    actor: str,
    source: str,
) -> PeopleImported:
    """Add the people of a read file; raise InvalidRows (writing nothing)
    naming every row that cannot be done, the file's bad rows with them."""
    rows = people_file.rows
    orgs = _organisations(session, {r.org_code for r in rows if r.org_code})
    known = _known_people(session, {r.email for r in rows})
    plan = _plan(rows, orgs, known, people_file.problems)
    ids = _add_new_people(session, plan, now)
    _add_roles(session, plan, ids, orgs, now)
    _record(session, plan, ids, now=now, actor=actor, source=source)
    welcomes = _queue_welcomes(session, settings, plan, ids, orgs, now)
    welcomes += _welcome_the_raised(session, settings, plan, known, now)
    return PeopleImported(
        added=len(plan.new),
        roles_added=len(plan.grants),
        unchanged=plan.unchanged,
        welcomes=welcomes,
    )


def _queue_welcomes(
    session: Session,
    settings: Settings,
    plan: Plan,
    ids: dict[str, int],
    orgs: dict[str, Organisation],
    now: datetime,
) -> int:
    """Render and queue each new person's welcome, a slice at a time: a
    rendered email is several kilobytes, and a file may add 50,000 people."""
    queued = 0
    for emails_slice in _slices(plan.new):
        welcomes = [
            welcome_to_queue(
                settings,
                user=User(id=ids[email], email=email, name=plan.new[email].name),
                roles={r.role for r in plan.new[email].grants},
                organisations=sorted(
                    (orgs[r.org_code] for r in plan.new[email].grants if r.org_code),
                    key=lambda o: o.code,
                ),
                now=now,
            )
            for email in emails_slice
        ]
        queued += len(queue_emails(session, welcomes, now=now))
    return queued


def _slices(values: Iterable[T]) -> Iterator[list[T]]:
    values = list(values)
    for start in range(0, len(values), LOOKUP_SLICE):
        yield values[start : start + LOOKUP_SLICE]


def _organisations(session: Session, codes: set[str]) -> dict[str, Organisation]:
    found: dict[str, Organisation] = {}
    for codes_slice in _slices(sorted(codes)):
        for org in session.scalars(select(Organisation).where(Organisation.code.in_(codes_slice))):
            found[org.code] = org
    return found


def _welcome_the_raised(
    session: Session, settings: Settings, plan: Plan, known: dict[str, Known], now: datetime
) -> int:
    """Welcome, with a link to set up an app, each person already here who
    held only alert-only roles (so was never sent one) and is given a role
    that needs it.  Few people at a time, so one by one."""
    raised = {
        user_id
        for user_id, row in plan.grants
        if row.role != Role.ALERT_ONLY and _only_alert_only(known[row.email])
    }
    welcomed = 0
    for user_id in sorted(raised):
        user = session.get(User, user_id)
        if user is not None and raised_from_alert_only(session, user, Role.ALERT_ONLY.value):
            queue_welcome_email(session, settings, user=user, now=now)
            welcomed += 1
    return welcomed


def _only_alert_only(person: Known) -> bool:
    return person.national_role is None and all(
        role == Role.ALERT_ONLY for role in person.roles.values()
    )


def _known_people(session: Session, emails: set[str]) -> dict[str, Known]:
    known: dict[str, Known] = {}
    for emails_slice in _slices(sorted(emails)):
        for user_id, email, active, national_role in session.execute(
            select(User.id, User.email, User.active, User.national_role).where(
                User.email.in_(emails_slice)
            )
        ):
            known[email] = Known(user_id, active, national_role)
    by_id = {person.id: person for person in known.values()}
    for ids_slice in _slices(by_id):
        for user_id, org_id, role in session.execute(
            select(Membership.user_id, Membership.organisation_id, Membership.role).where(
                Membership.user_id.in_(ids_slice)
            )
        ):
            by_id[user_id].roles[org_id] = role
    return known


def _plan(
    rows: Sequence[PersonRow],
    orgs: dict[str, Organisation],
    known: dict[str, Known],
    problems: Problems,
) -> Plan:
    plan = Plan()
    seen: dict[tuple[str, str | None], int] = {}
    for row in rows:
        problem = _org_problem(row, orgs) or _repeated(row, seen)
        if problem is None:
            person = known.get(row.email)
            problem = (
                _place_new(plan, row) if person is None else _place_known(plan, row, person, orgs)
            )
        if problem is not None:
            problems.add(row.line, problem)
    problems.raise_any()
    return plan


def _org_problem(row: PersonRow, orgs: dict[str, Organisation]) -> str | None:
    if row.org_code is None:
        return None
    org = orgs.get(row.org_code)
    if org is None:
        return f"{row.org_code} is not a known organisation (load it with `mailflow orgs import`)"
    if not org.is_open:
        return f"{org.code} ({org.name}) is closed"
    return None


def _repeated(row: PersonRow, seen: dict[tuple[str, str | None], int]) -> str | None:
    key = (row.email, row.org_code)
    if key in seen:
        where = f"at {row.org_code}" if row.org_code else "as auditor"
        return f"{row.email} {where} is already on line {seen[key]}"
    seen[key] = row.line
    return None


def _place_new(plan: Plan, row: PersonRow) -> str | None:
    person = plan.new.setdefault(row.email, NewPerson(row.name, row.line))
    if person.name != row.name:
        return f"{row.email} is named {person.name!r} on line {person.line}: give one name"
    person.grants.append(row)
    return None


def _place_known(
    plan: Plan, row: PersonRow, person: Known, orgs: dict[str, Organisation]
) -> str | None:
    if not person.active:
        return (
            f"{row.email} was removed: add them back with `mailflow users add` "
            "(which sends them a new welcome)"
        )
    if row.org_code is None:
        held: str | None = person.national_role
    else:
        held = person.roles.get(orgs[row.org_code].id)
    if held is None:
        plan.grants.append((person.id, row))
    elif held == row.role:
        plan.unchanged += 1
    else:
        return (
            f"{row.email} is already {held} at {row.org_code}: a file does not change roles "
            "(use `mailflow users add`)"
        )
    return None


def _add_new_people(session: Session, plan: Plan, now: datetime) -> dict[str, int]:
    """Insert the new people; returns everyone's id by address (the new
    and those given roles)."""
    if not plan.new:
        return {}
    rows = [
        {
            "email": email,
            "name": person.name,
            "national_role": (
                NationalRole.AUDITOR if any(r.org_code is None for r in person.grants) else None
            ),
            "active": True,
            "created_at": now,
        }
        for email, person in plan.new.items()
    ]
    statement = insert(User).returning(User.id, sort_by_parameter_order=True)
    ids = session.connection().execute(statement, rows).scalars()
    return dict(zip(plan.new, ids, strict=True))


def _add_roles(
    session: Session, plan: Plan, ids: dict[str, int], orgs: dict[str, Organisation], now: datetime
) -> None:
    granted = [(ids[row.email], row) for person in plan.new.values() for row in person.grants]
    granted += plan.grants
    memberships = [
        {
            "user_id": user_id,
            "organisation_id": orgs[row.org_code].id,
            "role": Role(row.role),
            "created_at": now,
        }
        for user_id, row in granted
        if row.org_code is not None
    ]
    connection = session.connection()
    if memberships:
        connection.execute(insert(Membership), memberships)
    auditors = [user_id for user_id, row in plan.grants if row.org_code is None]
    for ids_slice in _slices(auditors):
        connection.execute(
            update(User).where(User.id.in_(ids_slice)).values(national_role=NationalRole.AUDITOR)
        )


def _record(
    session: Session,
    plan: Plan,
    ids: dict[str, int],
    *,
    now: datetime,
    actor: str,
    source: str,
) -> None:
    """The audit log says what `users add` would have, a row for each role
    given, and one for the import."""
    granted = [(ids[row.email], row) for person in plan.new.values() for row in person.grants]
    granted += plan.grants
    events: list[dict[str, Any]] = [
        {
            "at": now,
            "actor": actor,
            "action": "user.role_granted",
            "subject": f"user:{user_id}",
            "details": {
                "email": row.email,
                "role": row.role,
                **({"organisation": row.org_code} if row.org_code else {}),
                "source": source,
            },
        }
        for user_id, row in granted
    ]
    events.append(
        {
            "at": now,
            "actor": actor,
            "action": "people.imported",
            "subject": f"file:{source}",
            "details": {
                "added": len(plan.new),
                "roles_added": len(plan.grants),
                "unchanged": plan.unchanged,
            },
        }
    )
    session.connection().execute(insert(AuditEvent), events)

"""Organisations: importing and updating the list the service covers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.errors import InvalidInput
from mailflow.core.models import Organisation


@dataclass(frozen=True)
class OrganisationRecord:
    """One organisation as a list names it; ``line`` is where, so that an
    error can point at it."""

    line: int
    code: str
    name: str
    type: str
    parent_code: str | None = None
    opened_on: date | None = None
    closed_on: date | None = None


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    closed: int = 0
    unchanged: int = 0


def import_organisations(
    session: Session,
    records: Sequence[OrganisationRecord],
    *,
    now: datetime,
    actor: str,
    source: str,
) -> ImportSummary:
    """Create new organisations and update known ones (name, type, parent,
    dates).  Checks everything before writing anything: the caller commits
    only if this returns."""
    existing = {o.code: o for o in session.scalars(select(Organisation))}
    codes_in_file = {r.code for r in records}
    for record in records:
        if record.parent_code is None:
            continue
        if record.parent_code == record.code:
            raise InvalidInput(
                f"{source} line {record.line}", "an organisation cannot be its own parent"
            )
        if record.parent_code not in codes_in_file and record.parent_code not in existing:
            raise InvalidInput(
                f"{source} line {record.line}",
                f"parent {record.parent_code} is not a known organisation",
            )

    summary = ImportSummary()
    by_code = dict(existing)
    created = set()
    for record in records:
        if record.code not in by_code:
            org = Organisation(
                code=record.code,
                name=record.name,
                type=record.type,
                opened_on=record.opened_on,
                closed_on=record.closed_on,
                created_at=now,
                updated_at=now,
            )
            session.add(org)
            by_code[record.code] = org
            created.add(record.code)
    # New organisations need their ids before anyone can name them as parent.
    session.flush()
    summary.created = len(created)

    for record in records:
        org = by_code[record.code]
        parent = by_code[record.parent_code] if record.parent_code else None
        if record.code in created:
            org.parent_id = parent.id if parent else None
            continue
        changes: dict[str, list[str | None]] = {}
        for attr in ("name", "type", "opened_on", "closed_on"):
            new = getattr(record, attr)
            if getattr(org, attr) != new:
                changes[attr] = [_text(getattr(org, attr)), _text(new)]
                setattr(org, attr, new)
        if org.parent_id != (parent.id if parent else None):
            old_parent = session.get(Organisation, org.parent_id) if org.parent_id else None
            changes["parent"] = [old_parent.code if old_parent else None, record.parent_code]
            org.parent_id = parent.id if parent else None
        if not changes:
            summary.unchanged += 1
            continue
        if "closed_on" in changes and record.closed_on is not None:
            summary.closed += 1
        else:
            summary.updated += 1
        org.updated_at = now
        record_event(
            session,
            at=now,
            actor=actor,
            action="organisation.updated",
            subject=f"organisation:{org.code}",
            changes=changes,
            source=source,
        )

    record_event(
        session,
        at=now,
        actor=actor,
        action="organisations.imported",
        subject=f"file:{source}",
        created=summary.created,
        updated=summary.updated,
        closed=summary.closed,
    )
    return summary


def find_organisation(session: Session, code: str) -> Organisation | None:
    return session.scalar(select(Organisation).where(Organisation.code == code.strip().upper()))


def list_organisations(session: Session, *, include_closed: bool) -> list[Organisation]:
    """Organisations in code order; closed ones only if asked for."""
    query = select(Organisation).order_by(Organisation.code)
    if not include_closed:
        query = query.where(Organisation.closed_on.is_(None))
    return list(session.scalars(query))


def _text(value: object) -> str | None:
    return None if value is None else str(value)

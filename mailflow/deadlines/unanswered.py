"""The organisations of an alert that have not answered, for the auditors:
each with its type, its parent, who was sent the alert for it and whether
their email bounced.  A national alert can go to 20,000 organisations, so
the list is read as columns, streamed in code order, and written as CSV as
it goes; only the first rows are kept for the body of the email."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from mailflow.core.models import (
    AlertAudience,
    AlertStatus,
    Delivery,
    DeliveryState,
    Membership,
    Organisation,
    User,
)
from mailflow.core.text import safe_cell
from mailflow.deadlines.due import unanswered

# Rows read from the database at a time.
STREAM_ROWS = 1000
CSV_HEADER = ("code", "name", "type", "parent_code", "parent_name", "emailed", "bounced")


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    bounced: bool


@dataclass(frozen=True)
class UnansweredOrganisation:
    code: str
    name: str
    type: str
    parent_code: str | None
    parent_name: str | None
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True)
class Counts:
    in_scope: int
    answered: int
    not_answered: int


def counts(session: Session, alert_id: int) -> Counts:
    """The audience's organisations that answered and those (open) that
    have not; an organisation closed without answering is in neither."""
    answered = session.scalar(
        select(func.count())
        .select_from(AlertStatus)
        .join(
            AlertAudience,
            and_(
                AlertAudience.alert_id == AlertStatus.alert_id,
                AlertAudience.organisation_id == AlertStatus.organisation_id,
            ),
        )
        .where(AlertStatus.alert_id == alert_id)
    )
    not_answered = session.scalar(
        select(func.count())
        .select_from(AlertAudience)
        .join(Organisation, Organisation.id == AlertAudience.organisation_id)
        .where(unanswered(alert_id))
    )
    return Counts((answered or 0) + (not_answered or 0), answered or 0, not_answered or 0)


def unanswered_organisations(session: Session, alert_id: int) -> Iterator[UnansweredOrganisation]:
    """Each organisation without an answer, in code order, with the people
    who were sent the alert for it: one row per person, grouped here."""
    parent = aliased(Organisation)
    sent = (
        select(Membership.organisation_id, User.email, User.name, Delivery.state)
        .join(User, User.id == Membership.user_id)
        .join(Delivery, and_(Delivery.user_id == User.id, Delivery.alert_id == alert_id))
        .subquery()
    )
    rows = session.execute(
        select(
            Organisation.id,
            Organisation.code,
            Organisation.name,
            Organisation.type,
            parent.code,
            parent.name,
            sent.c.email,
            sent.c.name,
            sent.c.state,
        )
        .select_from(AlertAudience)
        .join(Organisation, Organisation.id == AlertAudience.organisation_id)
        .outerjoin(parent, parent.id == Organisation.parent_id)
        .outerjoin(sent, sent.c.organisation_id == Organisation.id)
        .where(unanswered(alert_id))
        .order_by(Organisation.code, sent.c.email)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for _, group in itertools.groupby(rows, key=lambda row: row[0]):
        people = list(group)
        recipients = tuple(
            Recipient(email, name, DeliveryState(state) is DeliveryState.BOUNCED)
            for *_, email, name, state in people
            if email is not None
        )
        _, code, name, type_, parent_code, parent_name, *_ = people[0]
        yield UnansweredOrganisation(code, name, type_, parent_code, parent_name, recipients)


def csv_row(org: UnansweredOrganisation) -> list[str]:
    return [
        safe_cell(cell)
        for cell in (
            org.code,
            org.name,
            org.type,
            org.parent_code or "",
            org.parent_name or "",
            "; ".join(r.email for r in org.recipients),
            "; ".join(r.email for r in org.recipients if r.bounced),
        )
    ]


@dataclass(frozen=True)
class UnansweredList:
    """The first ``shown`` organisations, how many there are in all, and
    every one of them as CSV (UTF-8, with a header row)."""

    shown: list[UnansweredOrganisation]
    total: int
    csv: bytes

    @property
    def more(self) -> int:
        return self.total - len(self.shown)


def list_unanswered(session: Session, alert_id: int, *, show: int) -> UnansweredList:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    shown: list[UnansweredOrganisation] = []
    total = 0
    for org in unanswered_organisations(session, alert_id):
        total += 1
        if len(shown) < show:
            shown.append(org)
        writer.writerow(csv_row(org))
    return UnansweredList(shown, total, out.getvalue().encode("utf-8"))

"""Who may answer an alert, and for which organisations, each read in one
statement: for a status link's page (the person, the alert, the
organisations they answer for in it, whether the link was used, whether
they have an app), and again inside the commit's transaction, where a race
matters (the person still active and still holding the organisations,
and when an update last asked for answers again).

The statements are built once, with their values bound at each call: they
run on every page view and every commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, exists, func, select, true
from sqlalchemy.orm import Session, aliased

from mailflow.core.models import (
    Alert,
    AlertAudience,
    AlertUpdate,
    Membership,
    MfaCredential,
    Organisation,
    PendingAction,
    Role,
    User,
)
from mailflow.core.pending import token_digest


def _answerable(*columns: Any) -> Select[Any]:
    """The organisations in the alert's audience (``alert_id``) the person
    (``user_id``) answers for, as administrator or responder."""
    return (
        select(*columns)
        .select_from(Organisation)
        .join(Membership, Membership.organisation_id == Organisation.id)
        .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
        .where(
            Membership.user_id == bindparam("user_id"),
            Membership.role.in_([Role.ADMINISTRATOR, Role.RESPONDER]),
            AlertAudience.alert_id == bindparam("alert_id"),
        )
    )


# When an update last asked for answers again (see answers_asked_again_at).
_ASKED_AGAIN_AT = (
    select(func.max(AlertUpdate.published_at))
    .where(AlertUpdate.alert_id == Alert.id, AlertUpdate.answer_again.is_(True))
    .scalar_subquery()
)

# One row for each organisation the person answers for (one row with
# none when they answer for none), each with the person and the alert;
# no row when either is missing.
_answerable_org = aliased(Organisation, _answerable(Organisation).subquery("answerable"))
_LINK_PAGE = (
    select(
        User,
        Alert,
        _answerable_org,
        exists().where(PendingAction.token_digest == bindparam("digest")).label("used"),
        select(MfaCredential.enrolled_at)
        .where(MfaCredential.user_id == User.id)
        .scalar_subquery()
        .label("enrolled_at"),
    )
    .select_from(User)
    .join(Alert, Alert.id == bindparam("alert_id"))
    .outerjoin(_answerable_org, true())
    .where(User.id == bindparam("user_id"))
    .order_by(_answerable_org.code)
)


@dataclass(frozen=True)
class LinkReading:
    """What a status link's page needs, as the database has it now."""

    user: User
    alert: Alert
    # In code order.
    answerable: list[Organisation]
    used: bool
    enrolled: bool


def read_link(session: Session, *, user_id: int, alert_id: int, token: str) -> LinkReading | None:
    """The person and the alert a link names, what the person answers for
    in it, and whether this link was used; None when the person or the
    alert is not there."""
    rows = session.execute(
        _LINK_PAGE, {"user_id": user_id, "alert_id": alert_id, "digest": token_digest(token)}
    ).all()
    if not rows:
        return None
    user, alert, _, used, enrolled_at = rows[0]
    return LinkReading(
        user=user,
        alert=alert,
        answerable=[row[2] for row in rows if row[2] is not None],
        used=bool(used),
        enrolled=enrolled_at is not None,
    )


_answerable_codes = _answerable(Organisation.id, Organisation.code).subquery("answerable")
_RIGHTS = (
    select(
        User.active,
        Alert.reference,
        Alert.deadline_at,
        _ASKED_AGAIN_AT.label("asked_again_at"),
        _answerable_codes.c.id,
        _answerable_codes.c.code,
    )
    .select_from(User)
    .join(Alert, Alert.id == bindparam("alert_id"))
    .outerjoin(_answerable_codes, true())
    .where(User.id == bindparam("user_id"))
)


@dataclass(frozen=True)
class AnswerRights:
    """What recording answers checks in its own transaction."""

    active: bool
    alert_reference: str
    deadline_at: datetime
    # When an update last asked for answers again, if one did.
    asked_again_at: datetime | None
    # The organisations the person answers for in the alert: code -> id.
    allowed: dict[str, int]


def answer_rights(session: Session, *, user_id: int, alert_id: int) -> AnswerRights | None:
    """The person's right to answer the alert now; None when the person or
    the alert is not there."""
    rows = session.execute(_RIGHTS, {"user_id": user_id, "alert_id": alert_id}).all()
    if not rows:
        return None
    first = rows[0]
    return AnswerRights(
        active=bool(first.active),
        alert_reference=first.reference,
        deadline_at=first.deadline_at,
        asked_again_at=first.asked_again_at,
        allowed={row.code: row.id for row in rows if row.id is not None},
    )

"""A decision committed, and both sides told in the same transaction: the
requester gets the decision (the reason for a denial), the other
administrators hear it was decided, and on approval the requester gets
the organisation's open alerts with status links for it.  The pages, the
reply confirmation and the command line all decide through
``commit_decision``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from mailflow.access.deciding import Decider, Decision, decide, decided_by_name
from mailflow.access.decision_emails import asker, deciders
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.links import ANSWER_LINK
from mailflow.core.mail.one_off import send_one_off
from mailflow.core.models import (
    AccessRequest,
    Alert,
    AlertAudience,
    AlertStatus,
    Organisation,
    User,
)

DECIDED_KIND = "access_decided"
DECIDED_OTHERS_KIND = "access_decided_others"
OPEN_ALERTS_KIND = "access_open_alerts"
EXPIRED_KIND = "access_expired"

# An organisation still owes an answer for an alert it has not answered,
# or whose answer says the work goes on.
_STILL_OPEN = (AnswerStatus.IN_PROGRESS.value, AnswerStatus.UNABLE.value)


def commit_decision(
    session: Session,
    settings: Settings,
    *,
    request_id: int,
    decider: Decider,
    approve: bool,
    reason: str,
    via: str,
    now: datetime,
) -> Decision:
    """Decide the request and queue what both sides are told, in the
    caller's transaction (see ``deciding.decide`` for the refusals)."""
    decision = decide(
        session,
        request_id=request_id,
        decider=decider,
        approve=approve,
        reason=reason,
        via=via,
        now=now,
    )
    tell_both_sides(session, settings, decision=decision, now=now)
    return decision


def tell_both_sides(
    session: Session, settings: Settings, *, decision: Decision, now: datetime
) -> None:
    request = decision.request
    organisation = session.get_one(Organisation, request.organisation_id)
    requester = session.get_one(User, request.requester_id)
    common: dict[str, object] = {
        "organisation": organisation,
        "approved": decision.approved,
        "decided_by": decided_by_name(session, request),
        "decided_at": request.decided_at,
        "reason": request.decision_reason,
        "asker": asker(session, request),
    }
    send_one_off(
        session,
        settings,
        template="access_decided",
        context=common | {"recipient_name": requester.name},
        to=requester,
        kind=DECIDED_KIND,
        now=now,
    )
    for administrator in deciders(session, request):
        if administrator.id == request.decided_by_id:
            continue
        send_one_off(
            session,
            settings,
            template="access_decided_others",
            context=common | {"recipient_name": administrator.name},
            to=administrator,
            kind=DECIDED_OTHERS_KIND,
            now=now,
        )
    if decision.approved:
        send_open_alerts(session, settings, requester=requester, organisation=organisation, now=now)


@dataclass(frozen=True)
class AlertLink:
    label: str
    url: str


@dataclass(frozen=True)
class OpenAlert:
    alert: Alert
    status: str | None
    links: list[AlertLink]


def open_alerts_of(session: Session, organisation_id: int) -> list[tuple[Alert, str | None]]:
    """The alerts that still need an answer from the organisation, with
    its current status (None when it has not answered), oldest first."""
    rows = session.execute(
        select(Alert, AlertStatus.status)
        .join(AlertAudience, AlertAudience.alert_id == Alert.id)
        .outerjoin(
            AlertStatus,
            and_(
                AlertStatus.alert_id == Alert.id,
                AlertStatus.organisation_id == organisation_id,
            ),
        )
        .where(
            AlertAudience.organisation_id == organisation_id,
            Alert.response_required.is_(True),
            (AlertStatus.status.is_(None)) | (AlertStatus.status.in_(_STILL_OPEN)),
        )
        .order_by(Alert.issued_at, Alert.id)
    )
    return [(alert, status) for alert, status in rows]


def send_open_alerts(
    session: Session,
    settings: Settings,
    *,
    requester: User,
    organisation: Organisation,
    now: datetime,
) -> bool:
    """Email the new responder the organisation's open alerts, each with
    one status link per status for that organisation; False when none."""
    found = open_alerts_of(session, organisation.id)
    if not found:
        return False
    tokens = ANSWER_LINK.tokens(settings)
    items = []
    for alert, status in found:
        links = []
        for choice in AnswerStatus:
            payload = {"u": requester.id, "a": alert.id, "o": organisation.id, "s": choice.value}
            url = ANSWER_LINK.url(settings, tokens.sign(payload, now))
            links.append(AlertLink(choice.label, url))
        label = AnswerStatus(status).label if status else None
        items.append(OpenAlert(alert, label, links))
    send_one_off(
        session,
        settings,
        template="access_open_alerts",
        context={
            "recipient_name": requester.name,
            "organisation": organisation,
            "alerts": items,
        },
        to=requester,
        kind=OPEN_ALERTS_KIND,
        now=now,
    )
    return True


def tell_expired(
    session: Session, settings: Settings, *, request: AccessRequest, now: datetime
) -> None:
    requester = session.get_one(User, request.requester_id)
    send_one_off(
        session,
        settings,
        template="access_expired",
        context={
            "recipient_name": requester.name,
            "organisation": session.get_one(Organisation, request.organisation_id),
            "expires_at": request.expires_at,
            "access_address": f"access@{settings.mail_domain}",
            "service_desk": settings.service_desk,
        },
        to=requester,
        kind=EXPIRED_KIND,
        now=now,
    )

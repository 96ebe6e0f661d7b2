"""The email that carries an update to an alert to one person: in the
thread of the alert email they were sent, with its reply address, and,
when the update asks for answers again, fresh status links and the reply
form for their organisations.  It is composed from a queued chaser email
(kind ``alert-update``, step ``u{number}``) by the job that composes
chaser emails."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_email import AlertEmailComposer
from mailflow.alerts.deliveries import describe_deliveries
from mailflow.alerts.in_thread import queue_in_alert_thread
from mailflow.alerts.updates import still_in_audience
from mailflow.config import Settings
from mailflow.core.models import (
    Alert,
    AlertAudience,
    AlertUpdate,
    ChaserEmail,
    Delivery,
    Organisation,
    OutgoingEmail,
    User,
)

# The kind of the outgoing email (outgoing_emails.kind).
ALERT_UPDATE_EMAIL = "alert_update"


def update_number(step: str) -> int | None:
    """The update a chaser email's step names: ``u3`` is update 3."""
    digits = step.removeprefix("u")
    return int(digits) if step.startswith("u") and digits.isdigit() else None


def compose_alert_update(
    session: Session, settings: Settings, chaser: ChaserEmail, now: datetime
) -> OutgoingEmail | str:
    """Queue, in the caller's transaction, the update email the chaser
    email stands for; or say why there is none to send."""
    alert = session.get(Alert, chaser.alert_id)
    number = update_number(chaser.step)
    update = (
        session.scalar(
            select(AlertUpdate).where(
                AlertUpdate.alert_id == chaser.alert_id, AlertUpdate.number == number
            )
        )
        if number is not None
        else None
    )
    if alert is None or update is None:
        return f"no update {chaser.step} of alert {chaser.alert_id}"
    if alert.closed_at is not None:
        return "the alert was closed"
    user = session.get_one(User, chaser.user_id)
    if not user.active:
        return "the person is no longer active"
    if not session.scalar(select(still_in_audience(alert.id, user.id))):
        return "the person no longer holds a role at an organisation the alert went to"
    delivery = session.scalar(
        select(Delivery).where(Delivery.alert_id == alert.id, Delivery.user_id == user.id)
    )
    if delivery is None:
        return "the person was not sent the alert"
    return _queue(session, settings, alert, update, delivery, user, now)


def _queue(
    session: Session,
    settings: Settings,
    alert: Alert,
    update: AlertUpdate,
    delivery: Delivery,
    user: User,
    now: datetime,
) -> OutgoingEmail:
    audience = {
        org.id: org
        for org in session.scalars(
            select(Organisation)
            .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
            .where(AlertAudience.alert_id == alert.id)
        )
    }
    [recipient] = describe_deliveries(session, [delivery.id])
    # The alert email's own links and form: they name this delivery, and
    # the reply address is its reply key, so answers are traced as ever.
    context = AlertEmailComposer(alert, audience, settings, now).recipient_context(recipient)
    context |= {"update": update, "answer_again": update.answer_again}
    return queue_in_alert_thread(
        session,
        settings,
        template="alert_update",
        context=context,
        alert=alert,
        delivery=delivery,
        user=user,
        kind=ALERT_UPDATE_EMAIL,
        now=now,
    )

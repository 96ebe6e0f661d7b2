"""The welcome email: a link (single use, seven days) to set up an
authenticator app, sent when a person is added or their second factor is
reset."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.domain.models import User
from mailflow.domain.outgoing import queue_email
from mailflow.mail.messages import build_message, notification_headers
from mailflow.mail.templates import render_email
from mailflow.mail.tokens import Purpose, TokenService

ENROL_PATH = "/enrol/"
ENROL_LINK_LIFETIME = timedelta(days=7)
WELCOME_KIND = "welcome"


def enrol_tokens(settings: Settings) -> TokenService:
    return TokenService(settings.secret_key, Purpose.ENROL, ENROL_LINK_LIFETIME)


def enrolment_link(settings: Settings, user_id: int, now: datetime | None = None) -> str:
    # The nonce makes each email's link its own, so using one does not use
    # up a later one (after a reset); the issue time lets a reset retire
    # every link sent before it.
    issued = int((now or datetime.now(UTC)).timestamp())
    token = enrol_tokens(settings).sign({"u": user_id, "n": secrets.token_urlsafe(12), "i": issued})
    return f"{settings.base_url}{ENROL_PATH}{token}"


def queue_welcome_email(
    session: Session, settings: Settings, *, user: User, now: datetime, reset: bool = False
) -> str:
    """Queue, in the caller's transaction, the email with the person's
    enrolment link; returns the link."""
    link = enrolment_link(settings, user.id, now)
    rendered = render_email(
        "welcome",
        {
            "service_name": settings.service_name,
            "recipient_name": user.name,
            "link": link,
            "expires_at": now + ENROL_LINK_LIFETIME,
            "reset": reset,
        },
        zone_name=settings.timezone,
    )
    headers = notification_headers(settings, user, now)
    queue_email(
        session,
        kind=WELCOME_KIND,
        recipient=user.email,
        mail_from="",
        raw=bytes(build_message(rendered, headers)),
        now=now,
    )
    return link

"""The emails to administrators about their people: each carries a
``Reply-To: reply+KEY@`` with a new ``PeopleKey`` (a reply to it is read
as people lines from that administrator) and, where it shows the people,
a link to the people page."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.access.people_lines import example_lines
from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.mail.addresses import new_key
from mailflow.core.mail.one_off import TheirMessage, ThreadHeaders, send_one_off
from mailflow.core.models import OutgoingEmail, PeopleKey, User

LIST_KIND = "people_list"
CONFIRM_KIND = "people_confirm"
REFUSED_KIND = "people_refused"
DONE_KIND = "people_done"
REVIEW_KIND = "people_review"


def people_page_link(
    settings: Settings, *, user_id: int, organisation_id: int, now: datetime
) -> str:
    """A link to the organisation's people page, bound to its person; the
    nonce makes each one its own, so using one leaves later ones working."""
    payload = {"u": user_id, "o": organisation_id, "n": secrets.token_urlsafe(12)}
    return links.make(settings, links.PEOPLE_LINK, payload, now)


def help_context(settings: Settings, codes: list[str]) -> dict[str, object]:
    """How to write people lines, for the emails that show it."""
    several = len(codes) > 1
    return {
        "people_address": f"people@{settings.mail_domain}",
        "example_lines": example_lines(codes[0] if several else None),
        "several": several,
    }


def new_people_key(
    session: Session, *, user_id: int, organisation_id: int | None, now: datetime
) -> str:
    key = new_key()
    session.add(
        PeopleKey(key=key, user_id=user_id, organisation_id=organisation_id, created_at=now)
    )
    return key


def send_people_email(
    session: Session,
    settings: Settings,
    *,
    template: str,
    context: dict[str, object],
    to: User,
    now: datetime,
    organisation_id: int | None = None,
    answering: str | None = None,
    inbound_message_id: int | None = None,
) -> OutgoingEmail:
    """Queue one email to an administrator about their people, replying
    (when ``answering``, their message's Message-ID) in their thread, with
    a reply key of its own."""
    key = new_people_key(session, user_id=to.id, organisation_id=organisation_id, now=now)
    return send_one_off(
        session,
        settings,
        template=template,
        context={"recipient_name": to.name} | context,
        to=to,
        kind=template,
        now=now,
        # In their thread, and marked as an answer, only when it answers them.
        thread=ThreadHeaders(None, TheirMessage(answering, None)) if answering else None,
        reply_key=key,
        inbound_message_id=inbound_message_id,
    )

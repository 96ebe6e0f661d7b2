"""The emails in answer to a message to ``access@``: "confirm your
request" with its single-use link, and "your request was not made" with
the reasons and how to write one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.access.request_lines import MAX_CODES, example_line
from mailflow.answers.reply_form import LineProblem
from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.mail.one_off import (
    TheirMessage,
    ThreadHeaders,
    send_one_off,
    send_one_off_to_address,
)
from mailflow.core.models import Organisation, PendingAction, User

CONFIRM_KIND = "access_confirm"
REFUSED_KIND = "access_refused"


def confirm_link(settings: Settings, action: PendingAction, token: str, now: datetime) -> str:
    """The page that commits the pending request: action, token, person."""
    payload = {"a": action.id, "t": token, "u": action.user_id}
    return links.make(settings, links.ACCESS_CONFIRM_LINK, payload, now)


def _examples(settings: Settings) -> dict[str, object]:
    return {
        "example_one": example_line(["RXB"]),
        "example_several": example_line(["RXB", "RXC"], "we are their outsourced IT provider"),
        "access_address": f"access@{settings.mail_domain}",
        "max_codes": MAX_CODES,
    }


def queue_confirm_email(
    session: Session,
    settings: Settings,
    *,
    person: User,
    action: PendingAction,
    token: str,
    organisations: Sequence[Organisation],
    reason: str,
    their_message_id: str | None,
    inbound_message_id: int | None,
    now: datetime,
) -> None:
    """Queue "confirm your request", in the caller's transaction."""
    send_one_off(
        session,
        settings,
        template="access_confirm",
        context={
            "recipient_name": person.name,
            "organisations": list(organisations),
            "reason": reason,
            "link": confirm_link(settings, action, token, now),
            "expires_at": action.expires_at,
        },
        to=person,
        kind=CONFIRM_KIND,
        now=now,
        thread=ThreadHeaders(None, TheirMessage(their_message_id, None)),
        inbound_message_id=inbound_message_id,
    )


def queue_refused_email(
    session: Session,
    settings: Settings,
    *,
    to: User | str,
    reasons: Sequence[str],
    problems: Sequence[LineProblem] = (),
    their_message_id: str | None,
    inbound_message_id: int | None,
    now: datetime,
) -> None:
    """Queue "your request was not made", to a person or to the address of
    someone we do not know (who has no link to be given, and no footer)."""
    context: dict[str, object] = {
        "recipient_name": to.name if isinstance(to, User) else None,
        "reasons": list(reasons),
        "problems": list(problems),
        **_examples(settings),
    }
    if isinstance(to, User):
        send_one_off(
            session,
            settings,
            template="access_refused",
            context=context,
            to=to,
            kind=REFUSED_KIND,
            now=now,
            thread=ThreadHeaders(None, TheirMessage(their_message_id, None)),
            inbound_message_id=inbound_message_id,
        )
        return
    send_one_off_to_address(
        session,
        settings,
        template="access_refused",
        context=context,
        to=to,
        kind=REFUSED_KIND,
        now=now,
        their_message_id=their_message_id,
        inbound_message_id=inbound_message_id,
    )

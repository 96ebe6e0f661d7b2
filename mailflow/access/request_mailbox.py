"""Mail to ``access@MAIL_DOMAIN``: a person asks to answer for other
organisations with ``REQUEST`` lines.

The From alone proves nothing, so a readable request from a registered,
active person only becomes a pending action, with a "confirm your
request" email whose link commits it after their second factor.
Everything else gets a reply saying why nothing was asked.

A stranger (an address no active person has) is answered too: the issue
asks that they be told why, and the gateway has already dropped
automatic mail and any From our own server's DMARC verdict contradicts,
so the answer goes to whoever really wrote.  There is no User to send to,
so that reply is queued to the address itself (``queue_email`` takes a
recipient without a user) and carries no personal link.  Every such
reply, to a person or a stranger, is counted per recipient address over
the last hour (as the answers' error replies are) so that a loop with a
broken mail system, or someone mailing us in a stranger's name from a
domain without DMARC, gets at most a few."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access import asking
from mailflow.access.request_emails import (
    CONFIRM_KIND,
    REFUSED_KIND,
    queue_confirm_email,
    queue_refused_email,
)
from mailflow.access.request_lines import RequestLines, read_request_lines
from mailflow.answers.reply_form import LineProblem
from mailflow.config import Settings
from mailflow.core import pending
from mailflow.core.models import Organisation, User
from mailflow.core.outgoing import recent_count
from mailflow.gateway.context import MailboxContext, Outcome, ignored, processed
from mailflow.gateway.reading import InboundReading
from mailflow.people.users import lock_person

UNKNOWN_SENDER = (
    "We do not know your address: only people registered with this service can ask to "
    "answer for an organisation. Ask your organisation's administrator to add you, or "
    "write from the address you are registered with."
)
NOT_READ = "We could not read a request in your message. Nothing has been asked for:"


@dataclass(frozen=True)
class Wanted:
    """The organisations a request may go on for, or why not."""

    organisations: list[Organisation]
    refusals: list[str]


def wanted_organisations(session: Session, person: User, codes: Sequence[str]) -> Wanted:
    found = {
        o.code: o
        for o in session.scalars(select(Organisation).where(Organisation.code.in_(list(codes))))
    }
    unknown = [c for c in codes if c not in found]
    organisations = [found[c] for c in codes if c in found]
    refusals = [f"{c} is not an organisation we know." for c in unknown]
    refusals += asking.refusals(session, person, organisations)
    return Wanted(organisations, refusals)


class AccessRequests:
    """The named mailbox ``access@``."""

    name = "access"

    def prepare(
        self,
        session: Session,
        person: User | None,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        # Parsed before the write transaction; a stranger's words are not read.
        return None if person is None else read_request_lines(reading.text)

    def handle(self, message: MailboxContext, prepared: object) -> Outcome:
        person = message.person
        if person is None:
            return _refuse(message, [UNKNOWN_SENDER], outcome="unknown sender")
        lines = prepared if isinstance(prepared, RequestLines) else read_request_lines("")
        if not lines.readable:
            return _refuse(
                message,
                [NOT_READ],
                problems=lines.problems,
                outcome="not understood: " + "; ".join(p.problem for p in lines.problems),
            )
        lock_person(message.session, person.id)
        wanted = wanted_organisations(message.session, person, lines.codes)
        if wanted.refusals:
            return _refuse(
                message,
                ["Nothing has been asked for:", *wanted.refusals],
                outcome="refused: " + " ".join(wanted.refusals),
            )
        return _pending(message, person, wanted.organisations, lines.reason)


def _pending(
    message: MailboxContext, person: User, organisations: list[Organisation], reason: str
) -> Outcome:
    """Record the request as pending and send the link that confirms it,
    unless the person has had too many such links this hour."""
    session, settings, now = message.session, message.settings, message.now
    sent = recent_count(
        session, recipient=person.email, kinds=[CONFIRM_KIND], since=now - timedelta(hours=1)
    )
    if sent >= settings.confirm_emails_per_hour:
        return ignored("too many requests this hour: no confirmation sent")
    action, token = pending.add(
        session,
        kind=pending.ACCESS_REQUEST,
        user_id=person.id,
        payload={
            "organisation_ids": [o.id for o in organisations],
            "reason": reason,
            "via": "email",
            "inbound_message_id": message.message.id,
        },
        now=now,
        lifetime=timedelta(hours=settings.confirm_link_hours),
    )
    queue_confirm_email(
        session,
        settings,
        person=person,
        action=action,
        token=token,
        organisations=organisations,
        reason=reason,
        their_message_id=message.reading.message_id,
        inbound_message_id=message.message.id,
        now=now,
    )
    codes = ", ".join(o.code for o in organisations)
    return processed(f"pending access request recorded ({codes}); confirmation sent")


def _refuse(
    message: MailboxContext,
    reasons: list[str],
    *,
    outcome: str,
    problems: Sequence[LineProblem] = (),
) -> Outcome:
    """Tell the sender why nothing was asked, unless their address has had
    too many such replies in the last hour.  Counted under a lock on the
    person when there is one; a stranger's count may let a second reply
    through when two of their messages are handled at the same moment."""
    session, settings, now = message.session, message.settings, message.now
    if message.person is not None:
        lock_person(session, message.person.id)
    sent = recent_count(
        session, recipient=message.sender, kinds=[REFUSED_KIND], since=now - timedelta(hours=1)
    )
    if sent >= settings.error_replies_per_hour:
        return processed(f"{outcome}; no email (limit of replies reached)")
    queue_refused_email(
        session,
        settings,
        to=message.person or message.sender,
        reasons=reasons,
        problems=problems,
        their_message_id=message.reading.message_id,
        inbound_message_id=message.message.id,
        now=now,
    )
    return processed(f"{outcome}; told the sender")

"""Mail to ``people@`` (the named mailbox) and replies to any people email
(a ``PeopleKey``): people lines from an administrator.

The lines are parsed before the write transaction (``prepare``); inside
it, LIST is answered at once, and the changes become one pending action
with a "confirm these changes" email: nothing changes until the
administrator confirms them with their second factor on the page.  A
stranger, a person who administers nothing, or lines that cannot be read
get a clear reply saying why, at most ``error_replies_per_hour`` an hour.
The gateway has already dropped automatic mail and forged senders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access.people_changes import (
    administered,
    name_organisations,
    open_requests_for,
    people_of,
)
from mailflow.access.people_emails import (
    CONFIRM_KIND,
    LIST_KIND,
    REFUSED_KIND,
    help_context,
    people_page_link,
    send_people_email,
)
from mailflow.access.people_lines import (
    LineProblem,
    PeopleLine,
    PeopleLinesNotUnderstood,
    Verb,
    parse_people_lines,
    render_line,
)
from mailflow.config import Settings
from mailflow.core import links, pending
from mailflow.core.mail.one_off import send_one_off_to_address
from mailflow.core.models import Organisation, PeopleKey, User
from mailflow.core.outgoing import recent_count
from mailflow.gateway.context import (
    InboundContext,
    KeyOwner,
    MailboxContext,
    Outcome,
    ReplyContext,
    ignored,
    processed,
)
from mailflow.gateway.reading import InboundReading
from mailflow.people.users import lock_person

# How long a reply to a people email is taken.
PEOPLE_KEY_DAYS = 30


@dataclass(frozen=True)
class ReadLines:
    """What the message said: its lines, or the problems with them."""

    lines: list[PeopleLine]
    problems: list[LineProblem]


def read_lines(reading: InboundReading) -> ReadLines:
    try:
        return ReadLines(parse_people_lines(reading.text), [])
    except PeopleLinesNotUnderstood as exc:
        return ReadLines([], exc.problems)


class PeopleMailbox:
    """``people@MAIL_DOMAIN``."""

    name = "people"

    def prepare(
        self,
        session: Session,
        person: User | None,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        return read_lines(reading)

    def handle(self, message: MailboxContext, prepared: object) -> Outcome:
        return handle_lines(message, message.person, message.sender, prepared, None)


class PeopleReplies:
    """The reply key of an email to an administrator about their people."""

    name = "people"

    def accepts(self, session: Session, key: str, *, settings: Settings, now: datetime) -> bool:
        since = now - timedelta(days=PEOPLE_KEY_DAYS)
        found = session.scalar(
            select(PeopleKey.key).where(PeopleKey.key == key, PeopleKey.created_at >= since)
        )
        return found is not None

    def owner(self, session: Session, key: str) -> KeyOwner | None:
        found = session.get(PeopleKey, key)
        if found is None:
            return None
        return KeyOwner(self, session.get_one(User, found.user_id), found)

    def prepare(
        self,
        session: Session,
        owner: KeyOwner,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        return read_lines(reading)

    def handle(self, reply: ReplyContext, prepared: object) -> Outcome:
        key = reply.owner.thing
        assert isinstance(key, PeopleKey)
        if key.created_at < reply.now - timedelta(days=PEOPLE_KEY_DAYS):
            return ignored("people reply key expired")
        person = reply.owner.person if reply.owner.person.active else None
        return handle_lines(reply, person, reply.owner.person.email, prepared, key.organisation_id)


def handle_lines(
    context: InboundContext,
    person: User | None,
    sender: str,
    prepared: object,
    default_organisation_id: int | None,
) -> Outcome:
    """What people lines from ``sender`` do, inside the write transaction."""
    if not isinstance(prepared, ReadLines):
        return ignored("nothing read from the message")
    if person is None:
        return refuse(
            context,
            sender,
            None,
            reason=f"We do not know the address {sender}: only administrators can change people.",
            outcome="unknown sender",
        )
    organisations = administered(context.session, person.id)
    if not organisations:
        return refuse(
            context,
            sender,
            person,
            reason="You are not an administrator of any organisation, so you cannot change "
            "its people. Ask one of your organisation's administrators.",
            outcome="not an administrator",
        )
    codes = [o.code for o in organisations]
    if prepared.problems:
        return refuse(
            context,
            sender,
            person,
            reason="Some of what you wrote could not be read:",
            outcome="not understood",
            problems=prepared.problems,
            codes=codes,
        )
    default = next((o.code for o in organisations if o.id == default_organisation_id), None)
    named, problems = name_organisations(prepared.lines, codes, default)
    if problems:
        return refuse(
            context,
            sender,
            person,
            reason="Some lines cannot be done:",
            outcome="refused lines",
            problems=problems,
            codes=codes,
        )
    by_code = {o.code: o for o in organisations}
    listed = _answer_lists(
        context, person, [by_code[str(x.code)] for x in named if x.verb is Verb.LIST]
    )
    changes = [line for line in named if line.verb is not Verb.LIST]
    if not changes:
        if not listed:
            return processed("LIST asked for; no email (limit of lists an hour reached)")
        return processed(f"listed the people of {', '.join(listed)}")
    return _pending(context, person, changes, by_code)


def _answer_lists(
    context: InboundContext, person: User, organisations: Sequence[Organisation]
) -> list[str]:
    """Send the people of each organisation asked for (once each), up to
    MAILFLOW_CONFIRM_EMAILS_PER_HOUR such lists an hour: each carries a
    live page link, so a loop must not become a flood."""
    session = context.session
    lock_person(session, person.id)
    allowed = context.settings.confirm_emails_per_hour - recent_count(
        session, recipient=person.email, kinds=[LIST_KIND], since=context.now - timedelta(hours=1)
    )
    done: list[str] = []
    for organisation in organisations:
        if organisation.code in done:
            continue
        if len(done) >= allowed:
            break
        done.append(organisation.code)
        send_people_email(
            context.session,
            context.settings,
            template=LIST_KIND,
            context=list_context(
                context.session, context.settings, person, organisation, context.now
            ),
            to=person,
            now=context.now,
            organisation_id=organisation.id,
            answering=context.reading.message_id,
            inbound_message_id=context.message.id,
        )
    return done


def list_context(
    session: Session, settings: Settings, person: User, organisation: Organisation, now: datetime
) -> dict[str, object]:
    page_link = people_page_link(
        settings, user_id=person.id, organisation_id=organisation.id, now=now
    )
    return {
        "organisation": organisation,
        "people": people_of(session, organisation.id),
        "requests": open_requests_for(session, organisation.id),
        "page_link": page_link,
    } | help_context(settings, [organisation.code])


def _pending(
    context: InboundContext,
    person: User,
    changes: list[PeopleLine],
    by_code: dict[str, Organisation],
) -> Outcome:
    """One pending action for all the changes, and the email to confirm it."""
    session, settings, now = context.session, context.settings, context.now
    lock_person(session, person.id)
    sent = recent_count(
        session, recipient=person.email, kinds=[CONFIRM_KIND], since=now - timedelta(hours=1)
    )
    if sent >= settings.confirm_emails_per_hour:
        return ignored("too many people emails this hour: no confirmation sent")
    codes = sorted({str(c.code) for c in changes})
    payload: dict[str, object] = {"lines": [render_line(c) for c in changes]}
    if len(codes) == 1:
        # The organisation it is about: removing its person ends it.
        payload["o"] = by_code[codes[0]].id
    lifetime = timedelta(hours=settings.confirm_link_hours)
    action, token = pending.add(
        session,
        kind=pending.PEOPLE_CHANGES,
        user_id=person.id,
        payload=payload,
        now=now,
        lifetime=lifetime,
    )
    link = links.make(
        settings, links.PEOPLE_CONFIRM_LINK, {"u": person.id, "a": action.id, "n": token}, now
    )
    send_people_email(
        session,
        settings,
        template=CONFIRM_KIND,
        context={
            "link": link,
            "expires_at": now + lifetime,
            "changes": [c.describe() for c in changes],
        },
        to=person,
        now=now,
        organisation_id=by_code[codes[0]].id if len(codes) == 1 else None,
        answering=context.reading.message_id,
        inbound_message_id=context.message.id,
    )
    return processed(f"{len(changes)} people changes pending; confirmation sent")


def refuse(
    context: InboundContext,
    sender: str,
    person: User | None,
    *,
    reason: str,
    outcome: str,
    problems: Sequence[LineProblem] = (),
    codes: Sequence[str] = (),
) -> Outcome:
    """Tell the sender why nothing changed, unless they have had too many
    such emails this hour (counted under a lock on a known person)."""
    session, now = context.session, context.now
    if person is not None:
        lock_person(session, person.id)
    sent = recent_count(
        session, recipient=sender, kinds=[REFUSED_KIND], since=now - timedelta(hours=1)
    )
    if sent >= context.settings.error_replies_per_hour:
        return processed(f"{outcome}; no email (limit of error replies reached)")
    email_context = {
        "reason": reason,
        "problems": list(problems),
        "recipient_name": person.name if person else None,
        "example_lines": [],
    } | (help_context(context.settings, list(codes)) if codes else {})
    if person is None:
        # A stranger is answered at the address they wrote from, as no one.
        send_one_off_to_address(
            session,
            context.settings,
            template=REFUSED_KIND,
            context=email_context,
            to=sender,
            kind=REFUSED_KIND,
            now=now,
            their_message_id=context.reading.message_id,
            inbound_message_id=context.message.id,
        )
    else:
        send_people_email(
            session,
            context.settings,
            template=REFUSED_KIND,
            context=email_context,
            to=person,
            now=now,
            answering=context.reading.message_id,
            inbound_message_id=context.message.id,
        )
    return processed(f"{outcome}; told the sender")

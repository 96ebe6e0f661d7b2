"""Replies to a decision email: its reply key belongs to one
administrator's email about one request, and ``APPROVE`` or
``DENY: reason`` becomes a pending decision that they confirm with their
second factor (``/access/decision/TOKEN``).  The gateway has checked the
reply already: the key, the sender is the key's administrator, not
automatic mail, DMARC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailflow.access.deciding import Decider, check_may_decide, decided_by_name
from mailflow.access.decision_emails import asker
from mailflow.access.decision_lines import (
    FORM_LINES,
    DecisionWords,
    LineProblem,
    ReplyNotUnderstood,
    parse_decision,
)
from mailflow.config import Settings
from mailflow.core import links, pending
from mailflow.core.errors import NotAllowed
from mailflow.core.mail.one_off import TheirMessage, ThreadHeaders, send_one_off
from mailflow.core.mail.templates import format_time
from mailflow.core.models import (
    AccessDecisionKey,
    AccessRequest,
    AccessState,
    Organisation,
    PendingAction,
    User,
)
from mailflow.core.outgoing import recent_count
from mailflow.gateway.context import KeyOwner, Outcome, ReplyContext, ignored, processed
from mailflow.gateway.reading import InboundReading
from mailflow.people.users import lock_person

CONFIRM_KIND = "access_decision_confirm"
PROBLEM_KIND = "access_decision_problem"


@dataclass(frozen=True)
class _Parsed:
    words: DecisionWords | None
    problems: list[LineProblem]


class AccessDecisionReplies:
    """The reply key of a decision email (``AccessDecisionKey``)."""

    name = "access-decision"

    def accepts(self, session: Session, key: str, *, settings: Settings, now: datetime) -> bool:
        # Open requests, and those decided or expired within a request's
        # lifetime (whose late replies are told who decided).
        since = now - timedelta(days=settings.access_request_days)
        found = session.scalar(
            select(AccessDecisionKey.key)
            .join(AccessRequest, AccessRequest.id == AccessDecisionKey.request_id)
            .where(
                AccessDecisionKey.key == key,
                or_(
                    AccessRequest.state == AccessState.OPEN,
                    func.coalesce(AccessRequest.decided_at, AccessRequest.expires_at) >= since,
                ),
            )
        )
        return found is not None

    def owner(self, session: Session, key: str) -> KeyOwner | None:
        found = session.get(AccessDecisionKey, key)
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
        try:
            return _Parsed(parse_decision(reading.text), [])
        except ReplyNotUnderstood as exc:
            return _Parsed(None, exc.problems)

    def handle(self, reply: ReplyContext, prepared: object) -> Outcome:
        key = reply.owner.thing
        assert isinstance(key, AccessDecisionKey)
        assert isinstance(prepared, _Parsed)
        return _DecisionReply(reply, key).handle(prepared)


@dataclass(frozen=True)
class _DecisionReply:
    context: ReplyContext
    key: AccessDecisionKey

    @property
    def request(self) -> AccessRequest:
        return self.context.session.get_one(AccessRequest, self.key.request_id)

    def handle(self, parsed: _Parsed) -> Outcome:
        session, request = self.context.session, self.request
        person = self.context.owner.person
        if request.state is not AccessState.OPEN:
            who = decided_by_name(session, request)
            if request.decided_at is None:
                reason = "This request expired before anyone decided it."
            else:
                when = format_time(request.decided_at, self.context.settings.zone)
                reason = f"This request was already {request.state.value} by {who} on {when}."
            return self.not_recorded(reason, f"already {request.state.value}")
        if request.expires_at <= self.context.now:
            return self.not_recorded("This request has expired.", "request expired")
        try:
            check_may_decide(session, request, Decider(user_id=person.id))
        except NotAllowed as exc:
            return self.not_recorded(f"You cannot decide this request: {exc}.", str(exc))
        if parsed.words is None:
            return self.not_recorded(
                "Your reply could not be read as a decision:",
                "not understood: " + "; ".join(p.problem for p in parsed.problems),
                problems=parsed.problems,
                show_form=True,
            )
        return self.pending(parsed.words)

    def pending(self, words: DecisionWords) -> Outcome:
        session, settings, now = self.context.session, self.context.settings, self.context.now
        person = self.context.owner.person
        lock_person(session, person.id)
        mine = list(
            session.scalars(
                select(PendingAction).where(
                    PendingAction.kind == pending.ACCESS_DECISION,
                    PendingAction.user_id == person.id,
                    PendingAction.created_at >= now - timedelta(hours=1),
                )
            )
        )
        if len(mine) >= settings.confirm_emails_per_hour:
            return ignored("too many replies this hour: no confirmation sent")
        # A newer reply about the same request replaces the older one's link.
        pending.supersede(
            (a for a in mine if a.payload.get("request_id") == self.key.request_id), now=now
        )
        lifetime = timedelta(hours=settings.confirm_link_hours)
        action, token = pending.add(
            session,
            kind=pending.ACCESS_DECISION,
            user_id=person.id,
            payload={
                "request_id": self.key.request_id,
                "verb": words.verb.value,
                "reason": words.reason,
            },
            now=now,
            lifetime=lifetime,
        )
        link = links.make(
            settings, links.DECISION_CONFIRM_LINK, {"p": action.id, "n": token, "u": person.id}, now
        )
        self._send(
            "access_decision_confirm",
            CONFIRM_KIND,
            {
                "verb_label": words.verb.value,
                "reason": words.reason,
                "link": link,
                "link_expires_at": now + lifetime,
            },
        )
        return processed(f"pending decision recorded ({words.verb.value}); confirmation sent")

    def not_recorded(
        self,
        reason: str,
        outcome: str,
        *,
        problems: list[LineProblem] | None = None,
        show_form: bool = False,
    ) -> Outcome:
        """Say why nothing was recorded, within the hourly limit of such
        emails (counted under a lock on the person)."""
        session, person = self.context.session, self.context.owner.person
        lock_person(session, person.id)
        sent = recent_count(
            session,
            recipient=person.email,
            kinds=[PROBLEM_KIND],
            since=self.context.now - timedelta(hours=1),
        )
        if sent >= self.context.settings.error_replies_per_hour:
            return processed(f"{outcome}; no email (limit of error replies reached)")
        self._send(
            "access_decision_problem",
            PROBLEM_KIND,
            {
                "reason": reason,
                "problems": problems or [],
                "show_form": show_form,
                "form_lines": FORM_LINES,
            },
        )
        return processed(f"{outcome}; told the sender")

    def _send(self, template: str, kind: str, extra: dict[str, object]) -> None:
        context, request = self.context, self.request
        person = context.owner.person
        send_one_off(
            context.session,
            context.settings,
            template=template,
            context={
                "recipient_name": person.name,
                "asker": asker(context.session, request),
                "organisation": context.session.get_one(Organisation, request.organisation_id),
            }
            | extra,
            to=person,
            kind=kind,
            now=context.now,
            thread=ThreadHeaders(None, TheirMessage(context.reading.message_id, self.key.key)),
            inbound_message_id=context.message.id,
        )

"""The pages that decide an access request, both through the one commit
flow: ``/access/TOKEN/approve`` and ``/access/TOKEN/deny`` (the links in
an administrator's decision email; the token names the request and the
administrator) and ``/access/decision/TOKEN`` (a decision read from a
reply, waiting as a pending action).  GET and HEAD only show what will
happen; POST decides, after the second factor, once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailflow.access.deciding import (
    AlreadyDecided,
    Decider,
    check_may_decide,
    decided_by_name,
)
from mailflow.access.decision_emails import Asker, asker
from mailflow.access.decision_links import Verb
from mailflow.access.decision_outcome import commit_decision
from mailflow.core import pending
from mailflow.core.errors import NotAllowed
from mailflow.core.links import ACCESS_DECIDE_LINK, DECISION_CONFIRM_LINK
from mailflow.core.mail.templates import format_time
from mailflow.core.models import AccessRequest, AccessState, Organisation, User
from mailflow.core.pages.commit_flow import Change, link_endpoint
from mailflow.core.pages.committing import AlreadyUsed, CodeCheck, Committed, Outcome
from mailflow.core.pages.forms import Problems, text
from mailflow.core.pages.refusals import (
    EXPIRED,
    INVALID,
    Refusal,
    int_field,
    linked_action,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled

MAX_REASON = 1000
ALREADY_USED = "This link has been used already. Nothing more was decided."


@dataclass(frozen=True)
class DecideContext:
    user: User
    request: AccessRequest
    organisation: Organisation
    asker: Asker
    verb: Verb
    reason: str
    enrolled: bool
    # The pending decision read from a reply, if that is what is confirmed.
    action_id: int | None = None
    nonce: str | None = None


EXPIRED_REQUEST = (
    "This request was not decided before it expired, so it can no longer be decided. "
    "Nothing has been decided now; the person who asked may ask again."
)


def already_decided(
    session: Session, request: AccessRequest, zone: ZoneInfo, status_code: int
) -> Refusal:
    """Not a dead end: who decided, and when."""
    who = decided_by_name(session, request)
    if request.state is AccessState.EXPIRED:
        message = "This request expired before anyone decided it. Nothing has been decided now."
    elif request.decided_at is not None:
        when = format_time(request.decided_at, zone)
        message = (
            f"This request was already {request.state.value} by {who} on {when}. "
            "Nothing more was decided."
        )
    else:
        message = f"This request is {request.state.value}. Nothing has been decided now."
    return Refusal(status_code, "Already decided", message)


class DecideKind:
    """What deciding shares, from a link or a reply: who may decide, the
    page, the change and what each outcome shows."""

    missing_code = "Enter the code from your authenticator app"
    verified_session_counts = True

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.zone = runtime.settings.zone

    def user_id(self, context: DecideContext) -> int:
        return context.user.id

    def code_check(self, context: DecideContext, now: datetime) -> CodeCheck | None:
        return None

    def checked(
        self,
        session: Session,
        *,
        request_id: int,
        user_id: int,
        verb: Verb,
        reason: str,
        posted: bool,
        now: datetime,
    ) -> DecideContext:
        """The context of an open request this person may decide, or the
        refusal to show."""
        request = session.get(AccessRequest, request_id)
        user = session.get(User, user_id)
        if request is None or user is None:
            raise Refusal(400, "This link is not valid", INVALID)
        if not user.active:
            raise Refusal(
                403,
                "Your access has been removed",
                "You can no longer use this service. Nothing has been decided.",
            )
        if request.state is not AccessState.OPEN:
            raise already_decided(session, request, self.zone, 409 if posted else 200)
        if request.expires_at <= now:
            # Expired, though the periodic pass has not marked it yet.
            raise Refusal(410, "This request has expired", EXPIRED_REQUEST)
        try:
            check_may_decide(session, request, Decider(user_id=user.id))
        except NotAllowed as exc:
            raise self.refused(None, str(exc)) from None
        return DecideContext(
            user=user,
            request=request,
            organisation=session.get_one(Organisation, request.organisation_id),
            asker=asker(session, request),
            verb=verb,
            reason=reason,
            enrolled=is_enrolled(session, user.id),
        )

    def use_once(self, session: Session, context: DecideContext, token: str, now: datetime) -> bool:
        raise NotImplementedError

    via = "link"

    def read(
        self,
        context: DecideContext,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        reason = text(form, "reason")
        if len(reason) > MAX_REASON:
            problems.add("reason", f"Write at most {MAX_REASON} characters")
        settings, request_id = self.runtime.settings, context.request.id
        decider = Decider(user_id=context.user.id)

        def change(session: Session) -> Outcome:
            if not self.use_once(session, context, token, now):
                return AlreadyUsed()
            try:
                decision = commit_decision(
                    session,
                    settings,
                    request_id=request_id,
                    decider=decider,
                    approve=context.verb is Verb.APPROVE,
                    reason=reason,
                    via=self.via,
                    now=now,
                )
            except AlreadyDecided:
                return AlreadyUsed()
            return Committed(decision.approved)

        return change

    def page(
        self,
        request: Request,
        context: DecideContext,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        approve = context.verb is Verb.APPROVE
        return self.pages.render(
            request,
            "access_decide.html",
            {
                "title": f"{'Approve' if approve else 'Deny'} access to "
                f"{context.organisation.code}",
                "approve": approve,
                "asker": context.asker,
                "organisation": context.organisation,
                "request": context.request,
                "reason": text(form, "reason") if form is not None else context.reason,
                "verified": verified,
                "enrolled": context.enrolled,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def committed(self, request: Request, context: DecideContext, outcome: Committed) -> Response:
        return self.pages.render(
            request,
            "access_decided.html",
            {
                "title": "Request decided",
                "approved": bool(outcome.result),
                "asker": context.asker,
                "organisation": context.organisation,
            },
        )

    def already_used(self, context: DecideContext) -> Refusal:
        with self.runtime.readers() as session:
            request = session.get_one(AccessRequest, context.request.id)
            if request.state is AccessState.OPEN:
                return Refusal(409, "Already used", ALREADY_USED)
            return already_decided(session, request, self.zone, 409)

    def refused(self, context: DecideContext | None, message: str) -> Refusal:
        return Refusal(
            403, "You cannot decide this request", f"Nothing has been decided: {message}."
        )


class DecideLinkKind(DecideKind):
    """``/access/TOKEN/approve`` or ``/deny``: the token ("r", "u") is the
    same for both, so it decides once, whichever is used."""

    def __init__(self, runtime: Runtime, pages: Pages, verb: Verb) -> None:
        super().__init__(runtime, pages)
        self.verb = verb
        self.tokens = ACCESS_DECIDE_LINK.tokens(runtime.settings)

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> DecideContext:
        context = self.checked(
            session,
            request_id=int_field(payload, "r"),
            user_id=int_field(payload, "u"),
            verb=self.verb,
            reason="",
            posted=posted,
            now=now,
        )
        refuse_links_from_before_removal(self.tokens, token, context.user)
        if pending.link_used(session, token):
            raise Refusal(409 if posted else 200, "Already used", ALREADY_USED)
        return context

    def use_once(self, session: Session, context: DecideContext, token: str, now: datetime) -> bool:
        return pending.use_link_once(
            session,
            kind=pending.ACCESS_DECIDE_LINK_USE,
            token=token,
            user_id=context.user.id,
            now=now,
        )


class DecisionConfirmKind(DecideKind):
    """``/access/decision/TOKEN``: a decision read from a reply."""

    via = "reply"

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        super().__init__(runtime, pages)
        self.tokens = DECISION_CONFIRM_LINK.tokens(runtime.settings)

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> DecideContext:
        action, nonce = linked_action(
            session, payload, kind=pending.ACCESS_DECISION, id_field="p", nonce_field="n"
        )
        data = action.payload
        try:
            verb = Verb(str(data.get("verb")))
        except ValueError:
            raise Refusal(400, "This link is not valid", INVALID) from None
        context = self.checked(
            session,
            request_id=int(data["request_id"]),
            user_id=action.user_id,
            verb=verb,
            reason=str(data.get("reason") or ""),
            posted=posted,
            now=now,
        )
        if action.used_at is not None:
            raise Refusal(409 if posted else 200, "Already used", ALREADY_USED)
        if action.superseded_at is not None or pending.is_expired(action, now):
            raise Refusal(410, "This link has expired", EXPIRED)
        refuse_links_from_before_removal(self.tokens, token, context.user)
        return replace(context, action_id=action.id, nonce=nonce)

    def use_once(self, session: Session, context: DecideContext, token: str, now: datetime) -> bool:
        assert context.action_id is not None and context.nonce is not None
        return pending.use(
            session,
            action_id=context.action_id,
            kind=pending.ACCESS_DECISION,
            token=context.nonce,
            user_id=context.user.id,
            now=now,
        )


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    """The decision pages, for the web app to serve."""
    confirm = link_endpoint(runtime, pages, DecisionConfirmKind(runtime, pages))
    approve = link_endpoint(runtime, pages, DecideLinkKind(runtime, pages, Verb.APPROVE))
    deny = link_endpoint(runtime, pages, DecideLinkKind(runtime, pages, Verb.DENY))
    return [
        Route(DECISION_CONFIRM_LINK.route, confirm, methods=["GET", "POST"]),
        Route(ACCESS_DECIDE_LINK.route + "/approve", approve, methods=["GET", "POST"]),
        Route(ACCESS_DECIDE_LINK.route + "/deny", deny, methods=["GET", "POST"]),
    ]

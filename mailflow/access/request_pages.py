"""The pages of asking for access: ``/access/confirm/TOKEN`` (a request
read from an email to access@, pending until its person commits it with
their second factor) and ``/access/new/TOKEN`` (the footer link of every
email: choose an organisation and say why).  Both go through the one
commit flow; GET and HEAD only show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailflow.access.asking import ask_for_access
from mailflow.access.new_request_page import NewRequestKind
from mailflow.access.page_parts import active_person, requested_page
from mailflow.core import pending
from mailflow.core.errors import NotAllowed
from mailflow.core.links import ACCESS_CONFIRM_LINK, ACCESS_NEW_LINK
from mailflow.core.models import Organisation, PendingAction, User
from mailflow.core.pages.commit_flow import Change, link_endpoint
from mailflow.core.pages.committing import AlreadyUsed, CodeCheck, Committed, Outcome
from mailflow.core.pages.forms import Problems
from mailflow.core.pages.refusals import (
    EXPIRED,
    INVALID,
    Refusal,
    linked_action,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled

ALREADY_SENT = (
    "This request has already been confirmed and sent to the administrators. "
    "Nothing more was asked."
)
SUPERSEDED = "This link was replaced by a newer one. Nothing has been asked from this one."


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    """The pages of asking for access, for the web app to serve."""
    confirm = link_endpoint(runtime, pages, ConfirmRequestKind(runtime, pages))
    new = link_endpoint(runtime, pages, NewRequestKind(runtime, pages))
    return [
        Route(ACCESS_CONFIRM_LINK.route, confirm, methods=["GET", "POST"]),
        Route(ACCESS_NEW_LINK.route, new, methods=["GET", "POST"]),
    ]


@dataclass(frozen=True)
class PendingRequest:
    user: User
    action: PendingAction
    nonce: str
    organisations: list[Organisation]
    reason: str
    via: str
    enrolled: bool


class ConfirmRequestKind:
    """A request read from an email, committed after the second factor."""

    missing_code = "Enter the code from your authenticator app"
    verified_session_counts = True

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.tokens = ACCESS_CONFIRM_LINK.tokens(runtime.settings)

    def user_id(self, context: PendingRequest) -> int:
        return context.user.id

    def code_check(self, context: PendingRequest, now: datetime) -> CodeCheck | None:
        return None

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> PendingRequest:
        action, nonce = linked_action(
            session, payload, kind=pending.ACCESS_REQUEST, id_field="a", nonce_field="t"
        )
        user = active_person(session, action.user_id)
        if action.used_at is not None:
            raise Refusal(409 if posted else 200, "Already sent", ALREADY_SENT)
        if action.superseded_at is not None:
            raise Refusal(410, "This link has been replaced", SUPERSEDED)
        if pending.is_expired(action, now):
            raise Refusal(410, "This link has expired", EXPIRED)
        refuse_links_from_before_removal(self.tokens, token, user)
        ids = [i for i in action.payload.get("organisation_ids", []) if isinstance(i, int)]
        organisations = list(
            session.scalars(
                select(Organisation).where(Organisation.id.in_(ids)).order_by(Organisation.code)
            )
        )
        if not organisations:
            raise Refusal(400, "This link is not valid", INVALID)
        return PendingRequest(
            user,
            action,
            nonce,
            organisations,
            str(action.payload.get("reason", "")),
            str(action.payload.get("via", "email")),
            is_enrolled(session, user.id),
        )

    def read(
        self,
        context: PendingRequest,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        user_id, action_id, nonce = context.user.id, context.action.id, context.nonce
        organisation_ids = [o.id for o in context.organisations]
        reason, via, settings = context.reason, context.via, self.runtime.settings

        def change(session: Session) -> Outcome:
            if not pending.use(
                session,
                action_id=action_id,
                kind=pending.ACCESS_REQUEST,
                token=nonce,
                user_id=user_id,
                now=now,
            ):
                return AlreadyUsed()
            person = session.get_one(User, user_id)
            opened, skipped = [], []
            for org_id in organisation_ids:
                org = session.get_one(Organisation, org_id)
                try:
                    ask_for_access(
                        session,
                        settings,
                        requester=person,
                        organisation=org,
                        reason=reason,
                        via=via,
                        now=now,
                        actor=f"user:{user_id}",
                    )
                    opened.append(f"{org.name} ({org.code})")
                except NotAllowed as exc:
                    # Held or asked for since the email: the rest go on.
                    skipped.append(str(exc))
            if not opened:
                raise NotAllowed(" ".join(skipped))
            return Committed((opened, skipped))

        return change

    def page(
        self,
        request: Request,
        context: PendingRequest,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "access_confirm.html",
            {
                "title": "Confirm your access request",
                "organisations": context.organisations,
                "reason": context.reason,
                "verified": verified,
                "enrolled": context.enrolled,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def committed(self, request: Request, context: PendingRequest, outcome: Committed) -> Response:
        return requested_page(self.pages, request, outcome)

    def already_used(self, context: PendingRequest) -> Refusal:
        return Refusal(409, "Already sent", ALREADY_SENT)

    def refused(self, context: PendingRequest, message: str) -> Refusal:
        return Refusal(409, "Nothing was asked", f"Nothing was asked. {message}")

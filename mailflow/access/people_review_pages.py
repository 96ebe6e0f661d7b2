"""The page a review email's links open, ``/people/review/TOKEN``, through
the one commit flow: GET shows what will happen and changes nothing; POST
with the second factor commits it, once (each link is single use).

A link either records the review ("all still right": sets
``AccessReview.reviewed_at``, audited) or removes one person, with the
same domain function as a REMOVE line, so the last-administrator rule and
the ending of the removed person's links hold the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailflow.access.people_admin_pages import active_administrator
from mailflow.access.people_changes import Applied, Person, actor_of, apply_changes, people_of
from mailflow.access.people_lines import PeopleLine, Verb
from mailflow.access.people_review import ALL_RIGHT
from mailflow.core import pending
from mailflow.core.audit import record_event
from mailflow.core.links import REVIEW_LINK
from mailflow.core.models import AccessReview, Organisation, User
from mailflow.core.pages.commit_flow import Change, link_endpoint
from mailflow.core.pages.committing import AlreadyUsed, CodeCheck, Committed, Outcome
from mailflow.core.pages.forms import Problems
from mailflow.core.pages.refusals import (
    INVALID,
    Refusal,
    int_field,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled

ALREADY_DONE = "This link has been used already. Nothing more was changed."
GONE = "{email} no longer holds a role at {code}. Nothing was changed."


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    """The review page, for the web app to serve."""
    review = link_endpoint(runtime, pages, ReviewKind(runtime, pages))
    return [Route(REVIEW_LINK.route, review, methods=["GET", "POST"])]


@dataclass(frozen=True)
class ReviewContext:
    user: User
    organisation: Organisation
    review: AccessReview
    people: list[Person]
    # The person the link removes; None for "all still right".
    removing: Person | None
    enrolled: bool


class ReviewKind:
    missing_code = "Enter the code from your authenticator app"
    verified_session_counts = True

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.tokens = REVIEW_LINK.tokens(runtime.settings)

    def user_id(self, context: ReviewContext) -> int:
        return context.user.id

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> ReviewContext:
        review = session.get(AccessReview, int_field(payload, "r"))
        removes = payload.get("rm")
        if (
            review is None
            or review.administrator_id != int_field(payload, "u")
            or review.organisation_id != int_field(payload, "o")
            or (removes is None and payload.get("do") != ALL_RIGHT)
            or (removes is not None and not isinstance(removes, int))
        ):
            raise Refusal(400, "This link is not valid", INVALID)
        organisation = session.get_one(Organisation, review.organisation_id)
        user = active_administrator(session, review.administrator_id, {organisation.id})
        refuse_links_from_before_removal(self.tokens, token, user)
        if pending.link_used(session, token):
            raise Refusal(409 if posted else 200, "Already done", ALREADY_DONE)
        people = people_of(session, organisation.id)
        removing = None
        if removes is not None:
            removing = next((p for p in people if p.user.id == removes), None)
            if removing is None:
                gone = session.get(User, removes)
                email = gone.email if gone is not None else "This person"
                raise Refusal(
                    410, "Already removed", GONE.format(email=email, code=organisation.code)
                )
        return ReviewContext(
            user, organisation, review, people, removing, is_enrolled(session, user.id)
        )

    def page(
        self,
        request: Request,
        context: ReviewContext,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "people_review.html",
            {
                "title": f"Who can answer for {context.organisation.code}",
                "organisation": context.organisation,
                "people": context.people,
                "removing": context.removing,
                "verified": verified,
                "enrolled": context.enrolled,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def read(
        self,
        context: ReviewContext,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        user_id, review_id = context.user.id, context.review.id
        code = context.organisation.code
        removing = context.removing.user.email if context.removing else None
        settings = self.runtime.settings

        def change(session: Session) -> Outcome:
            if not pending.use_link_once(
                session, kind=pending.REVIEW_LINK_USE, token=token, user_id=user_id, now=now
            ):
                return AlreadyUsed()
            if removing is not None:
                line = PeopleLine(Verb.REMOVE, code=code, email=removing)
                return Committed(
                    apply_changes(
                        session, settings, administrator_id=user_id, changes=[line], now=now
                    )
                )
            record_review(session, review_id=review_id, user_id=user_id, code=code, now=now)
            return Committed(
                Applied([f"Recorded: everyone who can answer for {code} is right"], [])
            )

        return change

    def code_check(self, context: ReviewContext, now: datetime) -> CodeCheck | None:
        return None

    def committed(self, request: Request, context: ReviewContext, outcome: Committed) -> Response:
        assert isinstance(outcome.result, Applied)
        next_step = (
            'When everyone else is right, use the "all still right" link in the email.'
            if context.removing is not None
            else "Thank you: we will ask again next round."
        )
        return self.pages.render(
            request,
            "people_done.html",
            {
                "title": "Done",
                "done": outcome.result.done,
                "welcomed": [],
                "next_step": next_step,
            },
        )

    def already_used(self, context: ReviewContext) -> Refusal:
        return Refusal(409, "Already done", ALREADY_DONE)

    def refused(self, context: ReviewContext, message: str) -> Refusal:
        return Refusal(403, "This cannot be done", f"Nothing was changed: {message}.")


def record_review(
    session: Session, *, review_id: int, user_id: int, code: str, now: datetime
) -> None:
    """The administrator says everyone is still right: the review is
    recorded (the first time only) and audited."""
    session.execute(
        update(AccessReview)
        .where(AccessReview.id == review_id, AccessReview.reviewed_at.is_(None))
        .values(reviewed_at=now)
    )
    record_event(
        session,
        at=now,
        actor=actor_of(user_id),
        action="access.reviewed",
        subject=f"access_review:{review_id}",
        organisation=code,
    )

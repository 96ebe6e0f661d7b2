"""Administrators' pages about their people, both through the one commit
flow: ``/people/confirm/TOKEN`` (changes read from an email to people@:
GET lists them, POST with the second factor makes them all, once) and
``/people/TOKEN`` (the organisation's people, roles, second factor and
open requests, with a form to change them; a link works once, and after
a commit a fresh one is emailed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailflow.access.people_changes import (
    Applied,
    Person,
    administered,
    apply_changes,
    open_requests_for,
    people_of,
)
from mailflow.access.people_emails import DONE_KIND, people_page_link, send_people_email
from mailflow.access.people_lines import PeopleLine, Verb, read_line
from mailflow.core import pending
from mailflow.core.links import PEOPLE_CONFIRM_LINK, PEOPLE_LINK, TokenService
from mailflow.core.models import AccessRequest, Organisation, PendingAction, Role, User
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

ALREADY_DONE = "These changes have already been made from this link. Nothing more was changed."
REPLACED = "This link no longer works: you are no longer an administrator here. Nothing changed."
ROLES = [r.value for r in Role]


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    """The people pages, for the web app to serve (confirm first: its path
    is inside /people/)."""
    confirm = link_endpoint(runtime, pages, PeopleConfirmKind(runtime, pages))
    people = link_endpoint(runtime, pages, PeoplePageKind(runtime, pages))
    return [
        Route(PEOPLE_CONFIRM_LINK.route, confirm, methods=["GET", "POST"]),
        Route(PEOPLE_LINK.route, people, methods=["GET", "POST"]),
    ]


def active_administrator(session: Session, user_id: int, organisation_ids: set[int]) -> User:
    """The link's person, if still an active administrator of every one of
    these organisations; else the refusal."""
    user = session.get(User, user_id)
    if user is None:
        raise Refusal(400, "This link is not valid", INVALID)
    theirs = {o.id for o in administered(session, user_id)}
    if not user.active or not organisation_ids <= theirs:
        raise Refusal(403, "You are not an administrator here", REPLACED)
    return user


class _PeopleKind:
    """What both pages share."""

    missing_code = "Enter the code from your authenticator app"
    verified_session_counts = True
    tokens: TokenService

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages

    def code_check(self, context: object, now: datetime) -> CodeCheck | None:
        return None

    def already_used(self, context: object) -> Refusal:
        return Refusal(409, "Already done", ALREADY_DONE)

    def refused(self, context: object, message: str) -> Refusal:
        return Refusal(403, "These changes cannot be made", f"Nothing was changed: {message}.")

    def done_page(self, request: Request, applied: Applied, next_step: str) -> Response:
        return self.pages.render(
            request,
            "people_done.html",
            {
                "title": "Changes made",
                "done": applied.done,
                "welcomed": applied.welcomed,
                "next_step": next_step,
            },
        )


# ------------------------------------------------------ /people/confirm/


@dataclass(frozen=True)
class ConfirmContext:
    user: User
    action: PendingAction
    changes: list[PeopleLine]
    enrolled: bool
    # The action's token, from the link: what takes it for committing.
    nonce: str


class PeopleConfirmKind(_PeopleKind):
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        super().__init__(runtime, pages)
        self.tokens = PEOPLE_CONFIRM_LINK.tokens(runtime.settings)

    def user_id(self, context: ConfirmContext) -> int:
        return context.user.id

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> ConfirmContext:
        action, nonce = linked_action(
            session, payload, kind=pending.PEOPLE_CHANGES, id_field="a", nonce_field="n"
        )
        if action.used_at is not None:
            raise Refusal(409 if posted else 200, "Already done", ALREADY_DONE)
        if action.superseded_at is not None:
            raise Refusal(410, "This link no longer works", REPLACED)
        if pending.is_expired(action, now):
            raise Refusal(410, "This link has expired", EXPIRED)
        changes = [read_line(str(line)) for line in action.payload.get("lines", [])]
        if not changes or any(c is None for c in changes):
            raise Refusal(400, "This link is not valid", INVALID)
        lines = [c for c in changes if c is not None]
        codes = {str(c.code) for c in lines}
        ids = {o.id for o in administered(session, action.user_id) if o.code in codes}
        user = active_administrator(session, action.user_id, ids)
        if len(ids) != len(codes):
            raise Refusal(403, "You are not an administrator here", REPLACED)
        refuse_links_from_before_removal(self.tokens, token, user)
        return ConfirmContext(user, action, lines, is_enrolled(session, user.id), nonce)

    def page(
        self,
        request: Request,
        context: ConfirmContext,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "people_confirm.html",
            {
                "title": "Confirm the changes to your people",
                "changes": [c.describe() for c in context.changes],
                "verified": verified,
                "enrolled": context.enrolled,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def read(
        self,
        context: ConfirmContext,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        user_id, action_id = context.user.id, context.action.id
        changes, nonce = context.changes, context.nonce
        settings = self.runtime.settings

        def change(session: Session) -> Outcome:
            if not pending.use(
                session,
                action_id=action_id,
                kind=pending.PEOPLE_CHANGES,
                token=nonce,
                user_id=user_id,
                now=now,
            ):
                return AlreadyUsed()
            return Committed(
                apply_changes(session, settings, administrator_id=user_id, changes=changes, now=now)
            )

        return change

    def committed(self, request: Request, context: ConfirmContext, outcome: Committed) -> Response:
        assert isinstance(outcome.result, Applied)
        return self.done_page(request, outcome.result, "")


# ------------------------------------------------------------ /people/


@dataclass(frozen=True)
class PageContext:
    user: User
    organisation: Organisation
    people: list[Person]
    requests: list[tuple[AccessRequest, User]]
    enrolled: bool


class PeoplePageKind(_PeopleKind):
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        super().__init__(runtime, pages)
        self.tokens = PEOPLE_LINK.tokens(runtime.settings)

    def user_id(self, context: PageContext) -> int:
        return context.user.id

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> PageContext:
        organisation = session.get(Organisation, int_field(payload, "o"))
        if organisation is None:
            raise Refusal(400, "This link is not valid", INVALID)
        user = active_administrator(session, int_field(payload, "u"), {organisation.id})
        refuse_links_from_before_removal(self.tokens, token, user)
        if pending.link_used(session, token):
            raise Refusal(
                409 if posted else 200,
                "Already used",
                "Changes were made from this link. Use the newer link we emailed you.",
            )
        return PageContext(
            user,
            organisation,
            people_of(session, organisation.id),
            open_requests_for(session, organisation.id),
            is_enrolled(session, user.id),
        )

    def page(
        self,
        request: Request,
        context: PageContext,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "people_page.html",
            {
                "title": f"The people of {context.organisation.code}",
                "organisation": context.organisation,
                "people": context.people,
                "requests": context.requests,
                "roles": ROLES,
                "form": form or {},
                "verified": verified,
                "enrolled": context.enrolled,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def read(
        self,
        context: PageContext,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        changes = _changes_from_form(context, form, problems)
        user_id, organisation = context.user.id, context.organisation
        settings = self.runtime.settings

        def change(session: Session) -> Outcome:
            if not pending.use_link_once(
                session, kind=pending.PEOPLE_LINK_USE, token=token, user_id=user_id, now=now
            ):
                return AlreadyUsed()
            applied = apply_changes(
                session, settings, administrator_id=user_id, changes=changes, now=now
            )
            admin = session.get_one(User, user_id)
            send_people_email(
                session,
                settings,
                template=DONE_KIND,
                context={
                    "organisation": organisation,
                    "changes": applied.done,
                    "page_link": people_page_link(
                        settings, user_id=user_id, organisation_id=organisation.id, now=now
                    ),
                },
                to=admin,
                now=now,
                organisation_id=organisation.id,
            )
            return Committed(applied)

        return change

    def committed(self, request: Request, context: PageContext, outcome: Committed) -> Response:
        assert isinstance(outcome.result, Applied)
        return self.done_page(
            request,
            outcome.result,
            "This page's link has been used. We have emailed you a new one.",
        )


def _changes_from_form(
    context: PageContext, form: dict[str, Any], problems: Problems
) -> list[PeopleLine]:
    code = context.organisation.code
    changes: list[PeopleLine] = []
    for person in context.people:
        chosen = text(form, f"change-{person.user.id}")
        if chosen == "remove":
            changes.append(PeopleLine(Verb.REMOVE, code=code, email=person.user.email))
        elif chosen in ROLES and chosen != person.role:
            changes.append(
                PeopleLine(Verb.ROLE, code=code, email=person.user.email, role=Role(chosen))
            )
        elif chosen:
            problems.add(f"change-{person.user.id}", f"choose a change for {person.user.email}")
    email = text(form, "add-email")
    if email and not text(form, "add-name"):
        # Asked for here, where it can be shown beside its field; someone
        # already registered keeps their own name.
        problems.add("add-name", "give the name of the person to add")
    elif email:
        line = f"ADD {email} {text(form, 'add-role')} {text(form, 'add-name')}"
        try:
            added = read_line(line)
        except ValueError as exc:
            problems.add("add-email", str(exc))
        else:
            if added is not None:
                changes.append(PeopleLine(Verb.ADD, 0, code, added.email, added.role, added.name))
    if not changes and not problems:
        problems.add("add-email", "choose a change to make, or add a person")
    return changes

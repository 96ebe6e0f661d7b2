"""``/access/new/TOKEN``, the footer link of every email to a person:
they find an organisation (by code or name: a GET with ``?q=`` lists the
open ones that match and changes nothing) and say why, then commit it
with their second factor.  The link commits once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from mailflow.access.asking import ask_for_access
from mailflow.access.page_parts import active_person, requested_page
from mailflow.access.request_lines import MAX_REASON_CHARS
from mailflow.core import pending
from mailflow.core.errors import InvalidInput, NotAllowed
from mailflow.core.links import ACCESS_NEW_LINK
from mailflow.core.models import Organisation, User
from mailflow.core.pages.commit_flow import Change
from mailflow.core.pages.committing import AlreadyUsed, CodeCheck, Committed, Outcome
from mailflow.core.pages.forms import Problems, text
from mailflow.core.pages.refusals import Refusal, int_field, refuse_links_from_before_removal
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled

ORG_FIELD = "org"
REASON_FIELD = "reason"
MAX_MATCHES = 20
MAX_QUERY_CHARS = 100
USED = (
    "You have already sent a request from this link. Each link works once: use the "
    '"Request access for another organisation" link in a newer email.'
)


@dataclass(frozen=True)
class NewRequest:
    user: User
    enrolled: bool


def matching_organisations(session: Session, query: str) -> list[Organisation]:
    """Open organisations whose code or name contains ``query``, codes
    that match exactly first, at most ``MAX_MATCHES``."""
    words = " ".join(query.split())[:MAX_QUERY_CHARS]
    if not words:
        return []
    like = "%" + words.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
    found = session.scalars(
        select(Organisation)
        .where(Organisation.closed_on.is_(None))
        .where(
            or_(
                func.lower(Organisation.code).like(like),
                func.lower(Organisation.name).like(like),
            )
        )
        .order_by(Organisation.code)
        .limit(MAX_MATCHES + 1)
    )
    matches = list(found)
    matches.sort(key=lambda o: o.code != words.upper())
    return matches[:MAX_MATCHES]


class NewRequestKind:
    missing_code = "Enter the code from your authenticator app"
    verified_session_counts = True

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.tokens = ACCESS_NEW_LINK.tokens(runtime.settings)

    def user_id(self, context: NewRequest) -> int:
        return context.user.id

    def code_check(self, context: NewRequest, now: datetime) -> CodeCheck | None:
        return None

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> NewRequest:
        user = active_person(session, int_field(payload, "u"))
        refuse_links_from_before_removal(self.tokens, token, user)
        if pending.link_used(session, token):
            raise Refusal(409 if posted else 200, "Link already used", USED)
        return NewRequest(user, is_enrolled(session, user.id))

    def read(
        self,
        context: NewRequest,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        code = text(form, ORG_FIELD).upper()
        reason = " ".join(text(form, REASON_FIELD).split())
        if not code:
            problems.add(ORG_FIELD, "Enter the code of the organisation, e.g. RXB")
        if len(reason) > MAX_REASON_CHARS:
            problems.add(REASON_FIELD, f"Keep the reason under {MAX_REASON_CHARS} characters")
        user_id, settings = context.user.id, self.runtime.settings

        def change(session: Session) -> Outcome:
            if not pending.use_link_once(
                session, kind=pending.ACCESS_NEW_LINK_USE, token=token, user_id=user_id, now=now
            ):
                return AlreadyUsed()
            org = session.scalar(select(Organisation).where(Organisation.code == code))
            if org is None:
                raise InvalidInput(ORG_FIELD, f"{code} is not an organisation we know")
            try:
                ask_for_access(
                    session,
                    settings,
                    requester=session.get_one(User, user_id),
                    organisation=org,
                    reason=reason,
                    via="web",
                    now=now,
                    actor=f"user:{user_id}",
                )
            except NotAllowed as exc:
                # Shown beside the field, so another can be chosen.
                raise InvalidInput(ORG_FIELD, str(exc)) from exc
            return Committed(([f"{org.name} ({org.code})"], []))

        return change

    def page(
        self,
        request: Request,
        context: NewRequest,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        query = request.query_params.get("q", "")[:MAX_QUERY_CHARS]
        matches: list[Organisation] = []
        if query.strip():
            with self.runtime.readers() as session:
                matches = matching_organisations(session, query)
        chosen = text(form, ORG_FIELD) if form else (matches[0].code if len(matches) == 1 else "")
        return self.pages.render(
            request,
            "access_new.html",
            {
                "title": "Request access for another organisation",
                "query": query,
                "searched": bool(query.strip()),
                "matches": matches,
                "org": chosen,
                "reason": text(form, REASON_FIELD) if form else "",
                "verified": verified,
                "enrolled": context.enrolled,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def committed(self, request: Request, context: NewRequest, outcome: Committed) -> Response:
        return requested_page(self.pages, request, outcome)

    def already_used(self, context: NewRequest) -> Refusal:
        return Refusal(409, "Link already used", USED)

    def refused(self, context: NewRequest, message: str) -> Refusal:
        return Refusal(409, "Nothing was asked", f"Nothing was asked. {message}")

"""The one page flow that commits a pending action after a second factor.

A kind of action (a module of its own: a status link, a reply's answers,
setting up an app) says what its page shows, what its form asks for, who
may commit it and the change itself; this flow does the rest, the same
for every kind: the CSRF token, the link, the person signed in, the
form's problems, the code (or a session verified in the last minutes),
single use and the change in one transaction (``commit_with_second_factor``),
and what each outcome shows.  Outcomes name no kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mailflow.core.links import TokenService
from mailflow.core.pages.committing import (
    AlreadyUsed,
    CodeCheck,
    CodeRefused,
    Committed,
    Invalid,
    Outcome,
    Refused,
    commit_with_second_factor,
)
from mailflow.core.pages.forms import Problems, text
from mailflow.core.pages.refusals import CODE_FIELD, Refusal, form_dict, guarded, open_link
from mailflow.core.pages.rendering import Pages
from mailflow.core.pages.security import is_verified
from mailflow.core.runtime import Runtime

Context = TypeVar("Context")
# Only taken in by a kind, so a kind for a wider context will do.
ContextIn = TypeVar("ContextIn", contravariant=True)
Change = Callable[[Session], Outcome]


class CommitKind(Protocol[ContextIn]):
    """A kind of action committed after a second factor.  ``Context`` is
    what one request knows about the action (loaded, checked)."""

    # Asked for when the form has no code.
    missing_code: str
    # Whether a session verified in the last minutes stands in for a code.
    verified_session_counts: bool

    def user_id(self, context: ContextIn) -> int:
        """The person the action belongs to: the only one who may commit it."""

    def page(
        self,
        request: Request,
        context: ContextIn,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        """The page showing what will be recorded, and the form."""

    def read(
        self,
        context: ContextIn,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        """Read the form (its problems into ``problems``) and return the
        change: single use first, then what it records, in the session it
        is given (the commit's transaction)."""

    def code_check(self, context: ContextIn, now: datetime) -> CodeCheck | None:
        """How the code is checked; None for the person's own app."""

    def committed(self, request: Request, context: ContextIn, outcome: Committed) -> Response:
        """The page after the commit."""

    def already_used(self, context: ContextIn) -> Refusal:
        """What a used action shows when a commit finds it used."""

    def refused(self, context: ContextIn, message: str) -> Refusal:
        """What a change refused by the domain (``NotAllowed``) shows."""


class LinkKind(CommitKind[Context], Protocol[Context]):
    """A kind opened from a signed link naming its person ("u")."""

    tokens: TokenService

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> Context:
        """The action the link names, refused (``Refusal``) when it cannot
        be committed: not valid, used, replaced, expired, or not this
        person's to commit any more."""


class CommitFlow:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def serve(
        self, request: Request, kind: LinkKind[Context], token: str, form: dict[str, Any] | None
    ) -> Response:
        """GET (or HEAD) shows the page and changes nothing; POST commits."""
        now = self.runtime.clock()
        payload, _ = open_link(request, kind.tokens, token, form, now)
        with self.runtime.readers() as session:
            context = kind.load(session, payload, token, now, form is not None)
        if form is None:
            verified = is_verified(request, kind.user_id(context), now)
            return kind.page(request, context, verified=verified, form=None, problems=Problems())
        return self.commit(request, kind, context, form, token, now)

    def commit(
        self,
        request: Request,
        kind: CommitKind[Context],
        context: Context,
        form: dict[str, Any],
        token: str,
        now: datetime,
    ) -> Response:
        """Commit a loaded action from its posted form (CSRF checked)."""
        user_id = kind.user_id(context)
        verified = self._verified(kind, request, user_id, now)
        problems = Problems()
        change = kind.read(context, form, problems, token, now)
        code = None if verified else text(form, CODE_FIELD)
        if code == "":
            problems.add(CODE_FIELD, kind.missing_code)
        if problems:
            return kind.page(
                request, context, verified=verified, form=form, problems=problems, status_code=400
            )
        outcome = commit_with_second_factor(
            self.runtime,
            request,
            user_id=user_id,
            code=code,
            now=now,
            change=change,
            check_code=kind.code_check(context, now),
        )
        if isinstance(outcome, Committed):
            return kind.committed(request, context, outcome)
        if isinstance(outcome, AlreadyUsed):
            raise kind.already_used(context)
        if isinstance(outcome, Refused):
            raise kind.refused(context, outcome.message)
        problems = Problems()
        status_code = 400
        if isinstance(outcome, CodeRefused):
            problems.add(CODE_FIELD, outcome.message)
            status_code = 429 if outcome.locked_out else 400
        elif isinstance(outcome, Invalid):
            problems.add(outcome.field, outcome.problem)
        verified = self._verified(kind, request, user_id, now)
        return kind.page(
            request,
            context,
            verified=verified,
            form=form,
            problems=problems,
            status_code=status_code,
        )

    @staticmethod
    def _verified(kind: CommitKind[Any], request: Request, user_id: int, now: datetime) -> bool:
        return kind.verified_session_counts and is_verified(request, user_id, now)


Endpoint = Callable[[Request], Awaitable[Response]]


def link_endpoint(runtime: Runtime, pages: Pages, kind: LinkKind[Any]) -> Endpoint:
    """The web endpoint for one kind's links (a route's ``{token}``): the
    request body is read on the event loop, then the page's database work
    runs in a thread (the database driver blocks), with refusals shown as
    pages (``guarded``)."""
    flow = CommitFlow(runtime)

    async def endpoint(request: Request) -> Response:
        token = request.path_params["token"]
        form = form_dict(await request.form()) if request.method == "POST" else None
        return await run_in_threadpool(guarded, pages, request, flow.serve, kind, token, form)

    return endpoint

""" "Email me a set-up link": a person who has not set up an authenticator
app (or whose welcome link expired) opens a status or confirm link and
cannot record anything.  The page offers a button that emails a fresh
enrolment link to the person the link belongs to, and only to them.

It is a POST with the form's CSRF token (GET changes nothing: mail scanners
open links), and it is rate-limited per person so that anyone holding a
link cannot flood its owner's inbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mailflow.core.audit import record_event
from mailflow.core.links import ANSWER_LINK, CONFIRM_LINK, SETUP_LINK_SUFFIX, TokenService
from mailflow.core.models import User
from mailflow.core.outgoing import recent_count
from mailflow.core.pages.refusals import (
    Refusal,
    form_dict,
    guarded,
    open_link,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled
from mailflow.people.welcome_email import WELCOME_KIND, queue_welcome_email

# Set-up emails of any kind (welcome, reset, requested here) to one person
# in a day: enough for a lost email or two, too few to flood anyone.
SETUP_LINKS_PER_DAY = 3
SETUP_LINK_WINDOW = timedelta(days=1)


class SetupLinkPages:
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.answer_tokens = ANSWER_LINK.tokens(runtime.settings)
        self.confirm_tokens = CONFIRM_LINK.tokens(runtime.settings)

    async def from_answer_link(self, request: Request) -> Response:
        return await self._request(request, self.answer_tokens)

    async def from_confirm_link(self, request: Request) -> Response:
        return await self._request(request, self.confirm_tokens)

    async def _request(self, request: Request, tokens: TokenService) -> Response:
        token = request.path_params["token"]
        form = form_dict(await request.form())
        return await run_in_threadpool(
            guarded, self.pages, request, self._send, tokens, token, form
        )

    def _send(
        self, request: Request, tokens: TokenService, token: str, form: dict[str, Any]
    ) -> Response:
        now = self.runtime.clock()
        _, user_id = open_link(request, tokens, token, form, now)
        back = request.url.path.removesuffix(SETUP_LINK_SUFFIX)
        title, message, status = self._queue(tokens, token, user_id, now)
        return self.pages.render(
            request,
            "setup_link_sent.html",
            {"title": title, "message": message, "back": back},
            status_code=status,
        )

    def _queue(
        self, tokens: TokenService, token: str, user_id: int, now: datetime
    ) -> tuple[str, str, int]:
        settings = self.runtime.settings
        with self.runtime.sessions.begin() as session:
            # Locked, so two presses at once cannot both pass the limit.
            user = session.scalar(select(User).where(User.id == user_id).with_for_update())
            if user is None or not user.active:
                raise Refusal(
                    403, "Your access has been removed", "You can no longer use this service."
                )
            # A link sent before the person was removed (and added again)
            # belongs to their old access: it sends nothing.
            refuse_links_from_before_removal(tokens, token, user)
            if is_enrolled(session, user.id):
                return (
                    "You have already set up an authenticator app",
                    "Go back to the link and enter a code from your app. If you have lost "
                    f"your phone, use a recovery code, or write to {settings.help_email}.",
                    200,
                )
            sent = recent_count(
                session,
                recipient=user.email,
                kinds=[WELCOME_KIND],
                since=now - SETUP_LINK_WINDOW,
            )
            if sent >= SETUP_LINKS_PER_DAY:
                return (
                    "We have already sent you set-up links today",
                    f"We sent {sent} in the last 24 hours. Look for an email from "
                    f"{settings.service_name} in your inbox and junk folder, and use the "
                    f"newest. If none has arrived, write to {settings.help_email}.",
                    429,
                )
            queue_welcome_email(session, settings, user=user, now=now)
            record_event(
                session,
                at=now,
                actor=f"user:{user.id}",
                action="mfa.setup_link_requested",
                subject=f"user:{user.id}",
            )
        return (
            "We have emailed you a set-up link",
            "It goes to the address this alert email was sent to and works for 7 days. "
            "Open it on a computer or phone, scan the QR code with an authenticator app, "
            "then come back to this link to record your answer.",
            200,
        )

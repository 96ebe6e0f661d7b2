"""The web app: the shell that serves each capability's pages (where
answers are committed with a second factor, and where people set up their
authenticator app) beside its own: home, the stylesheet, signing out, and
the error pages."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailflow.access import (
    decision_pages,
    people_admin_pages,
    people_review_pages,
    request_pages,
)
from mailflow.answers import answer_pages
from mailflow.core.pages.refusals import FORM_EXPIRED, form_dict
from mailflow.core.pages.rendering import Pages, web_root
from mailflow.core.pages.security import (
    SESSION_MAX_AGE_SECONDS,
    SecurityHeaders,
    SessionCookies,
    csrf_ok,
    describe_failed_request,
    session_cookie_name,
    uses_https,
    verified_key,
)
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.verified_sessions import end_verified_session
from mailflow.people import people_pages
from mailflow.reports import report_pages

log = logging.getLogger(__name__)

# Forms here are a few short fields; anything much larger is not ours.
MAX_BODY_BYTES = 64 * 1024

STATUS_PAGES = {
    400: ("Something was wrong with the request", "Check the address and try again."),
    404: (
        "Page not found",
        "If you typed the address, check it is correct. If you followed a link from an "
        "email, copy the whole address into your browser.",
    ),
    405: ("This page cannot be used that way", "Go back and open the link from the email."),
    413: ("What you sent is too large", "Shorten what you wrote and try again."),
}


def end_verified_session_of(runtime: Runtime, key: str) -> None:
    with runtime.sessions.begin() as session:
        end_verified_session(session, key=key)


class ErrorsLoggedOnce:
    """Starlette sends its 500 page and then raises the error again for the
    server to log, and uvicorn would log it with its whole traceback, which
    quotes the link token in the address.  The app has already logged it
    (with the token digested: secrets never appear in logs), so once the
    page has been sent the error stops here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if scope["type"] != "http" or not started:
                raise


def create_app(runtime: Runtime) -> ASGIApp:
    settings = runtime.settings
    pages = Pages(
        service_name=settings.service_name,
        zone_name=settings.timezone,
        help_email=settings.help_email,
    )
    stylesheet = (web_root() / "static" / "mailflow.css").read_bytes()

    async def home(request: Request) -> Response:
        return pages.render(request, "home.html", {"title": settings.service_name})

    async def css(request: Request) -> Response:
        return Response(
            stylesheet,
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def sign_out(request: Request) -> Response:
        form = form_dict(await request.form())
        if not csrf_ok(request, form):
            return pages.problem(request, 403, "This form has expired", FORM_EXPIRED)
        key = verified_key(request)
        if key is not None:
            # Server-side, so a copy of the cookie made before signing out
            # no longer counts as a second factor either.
            await run_in_threadpool(end_verified_session_of, runtime, key)
        request.session.clear()
        return RedirectResponse("/signed-out", status_code=303)

    async def signed_out(request: Request) -> Response:
        return pages.render(request, "signed_out.html", {"title": "You have signed out"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title, message = STATUS_PAGES.get(
            exc.status_code, ("Something went wrong", "Go back and try again.")
        )
        return await run_in_threadpool(
            pages.problem,
            request,
            exc.status_code,
            title,
            message,
            headers=dict(exc.headers or {}),
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        # Logged here with the traceback; the browser gets a plain page.
        # The address holds a link token, so the log names the route and a
        # digest of the token instead (secrets never appear in logs).
        log.error("%s", describe_failed_request(request, exc))
        return pages.problem(
            request,
            500,
            "Sorry, there is a problem with the service",
            "Nothing has been recorded. Try again later.",
        )

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/static/mailflow.css", css, methods=["GET"]),
        # Each capability registers its own pages.
        *answer_pages.routes(runtime, pages),
        *people_pages.routes(runtime, pages),
        *people_admin_pages.routes(runtime, pages),
        *people_review_pages.routes(runtime, pages),
        *request_pages.routes(runtime, pages),
        *decision_pages.routes(runtime, pages),
        *report_pages.routes(runtime, pages),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/signed-out", signed_out, methods=["GET"]),
    ]
    https = uses_https(settings)
    middleware = [
        Middleware(SecurityHeaders, https=https),
        Middleware(
            SessionCookies,
            settings=settings,
            session_cookie=session_cookie_name(settings),
            max_age=SESSION_MAX_AGE_SECONDS,
            same_site="lax",
            https_only=https,
        ),
    ]
    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: server_error}
    return ErrorsLoggedOnce(
        Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers=handlers,
            max_body_size=MAX_BODY_BYTES,
        )
    )

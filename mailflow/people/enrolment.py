"""Setting up an authenticator app from the link in a welcome email.

``GET /enrol/TOKEN`` only explains what will happen; the secret is made by
the POST of its "Continue" button (GET and HEAD never change anything, and
mail scanners open links), which shows the QR code, the key as text and a
code field; the POST of that code finishes enrolment, uses the link up and
shows the ten recovery codes, once.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import segno
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mailflow.core import pending
from mailflow.core.links import ENROL_LINK
from mailflow.core.models import AuditEvent, User
from mailflow.core.pages.commit_flow import Change, CommitFlow
from mailflow.core.pages.committing import AlreadyUsed, CodeCheck, Committed, Outcome
from mailflow.core.pages.forms import Problems
from mailflow.core.pages.refusals import (
    FORM_EXPIRED,
    Refusal,
    form_dict,
    guarded,
    open_link,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.pending import link_used
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import (
    MfaError,
    finish_enrolment,
    is_enrolled,
    pending_enrolment_secret,
    provisioning_uri,
    start_enrolment,
)

USED = (
    "This link has already been used to set up an authenticator app. If you need to set "
    "up a new one, ask an administrator to reset your second factor."
)
ALREADY_ENROLLED = (
    "You have already set up an authenticator app. If you have lost it, use a recovery "
    "code, or ask an administrator to reset your second factor."
)


def _reset_since(session: Session, user_id: int, issued: int) -> bool:
    """Whether the person's second factor was reset after a link was sent:
    a link from before a reset (which may be why it was reset) is void."""
    last_reset = session.scalar(
        select(func.max(AuditEvent.at)).where(
            AuditEvent.action == "mfa.reset", AuditEvent.subject == f"user:{user_id}"
        )
    )
    # Whole seconds: the reset's own new link is issued in the same instant.
    return last_reset is not None and int(last_reset.timestamp()) > issued


def qr_data_uri(uri: str) -> str:
    """The QR code as an SVG data URI (the page's policy allows data: images)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=6, border=4, dark="#000", light="#fff")
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


class EnrolmentPages:
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.tokens = ENROL_LINK.tokens(runtime.settings)
        self.flow = CommitFlow(runtime)
        self.kind = EnrolmentKind(runtime, self)

    async def enrol(self, request: Request) -> Response:
        token = request.path_params["token"]
        form = form_dict(await request.form()) if request.method == "POST" else None
        return await run_in_threadpool(guarded, self.pages, request, self._enrol, token, form)

    def _user(
        self, request: Request, token: str, form: dict[str, Any] | None, now: datetime
    ) -> User:
        payload, user_id = open_link(request, self.tokens, token, form, now)
        posted = form is not None
        if not isinstance(payload.get("n"), str):
            raise Refusal(400, "This link is not valid", "This link is not valid.")
        with self.runtime.readers() as session:
            user = session.get(User, user_id)
            if user is None:
                raise Refusal(400, "This link is not valid", "This link is not valid.")
            if not user.active:
                raise Refusal(
                    403, "Your access has been removed", "You can no longer use this service."
                )
            refuse_links_from_before_removal(self.tokens, token, user)
            if link_used(session, token):
                # Not 200: the link no longer works, whoever opens it.
                raise Refusal(409 if posted else 410, "This link has been used", USED)
            issued = payload.get("i")
            if not isinstance(issued, int) or _reset_since(session, user.id, issued):
                raise Refusal(
                    410,
                    "This link has been replaced",
                    "This set-up link was replaced by a newer one. Use the link in your most "
                    "recent email, or ask an administrator to send a new one.",
                )
            if is_enrolled(session, user.id):
                raise Refusal(409 if posted else 200, "Already set up", ALREADY_ENROLLED)
        return user

    def _enrol(self, request: Request, token: str, form: dict[str, Any] | None) -> Response:
        now = self.runtime.clock()
        user = self._user(request, token, form, now)
        if form is None:
            return self.pages.render(
                request,
                "enrol_start.html",
                {"title": "Set up your authenticator app", "user": user},
            )
        if form.get("action") == "finish" and request.session.get("enrol_uid") == user.id:
            return self._finish(request, token, user, form, now)
        with self.runtime.sessions.begin() as session:
            try:
                secret = start_enrolment(
                    session, user_id=user.id, secret_key=self.runtime.settings.secret_keys, now=now
                )
            except MfaError as exc:
                raise Refusal(409, "Already set up", exc.message) from None
        # The session only says that this browser started; the secret stays
        # in the database, encrypted (the session cookie is signed, not
        # encrypted, and an abandoned one lives for hours).
        request.session["enrol_uid"] = user.id
        return self.scan_page(request, user, secret, Problems())

    def scan_page(
        self, request: Request, user: User, secret: str, problems: Problems, status_code: int = 200
    ) -> Response:
        uri = provisioning_uri(secret, email=user.email, issuer=self.runtime.settings.service_name)
        return self.pages.render(
            request,
            "enrol_scan.html",
            {
                "title": "Scan the QR code with your authenticator app",
                "user": user,
                "qr": qr_data_uri(uri),
                "secret": grouped(secret),
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    def _finish(
        self, request: Request, token: str, user: User, form: dict[str, Any], now: datetime
    ) -> Response:
        """The code from the new app, through the one commit flow."""
        with self.runtime.readers() as session:
            try:
                secret = pending_enrolment_secret(
                    session, user_id=user.id, secret_key=self.runtime.settings.secret_keys
                )
            except MfaError as exc:
                raise Refusal(409, "Cannot set up", exc.message) from None
        if secret is None:
            raise Refusal(403, "This form has expired", FORM_EXPIRED)
        return self.flow.commit(request, self.kind, Enrolling(user, secret), form, token, now)


@dataclass
class Enrolling:
    user: User
    secret: str
    # Filled in by the code check: the recovery codes, to show once.
    codes: list[str] = field(default_factory=list)


class EnrolmentKind:
    """Setting up an app: the code checked is the new app's first one (so
    no earlier verified session stands in for it), and the change is the
    single use of the link."""

    missing_code = "Enter the 6-digit code from your authenticator app"
    verified_session_counts = False

    def __init__(self, runtime: Runtime, pages: EnrolmentPages) -> None:
        self.runtime = runtime
        self.pages = pages

    def user_id(self, context: Enrolling) -> int:
        return context.user.id

    def page(
        self,
        request: Request,
        context: Enrolling,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        return self.pages.scan_page(request, context.user, context.secret, problems, status_code)

    def read(
        self,
        context: Enrolling,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        def change(session: Session) -> Outcome:
            if not pending.use_link_once(
                session, kind=pending.ENROL_LINK_USE, token=token, user_id=context.user.id, now=now
            ):
                return AlreadyUsed()
            return Committed(list(context.codes))

        return change

    def code_check(self, context: Enrolling, now: datetime) -> CodeCheck:
        def check(session: Session, code: str, source: str) -> None:
            context.codes = finish_enrolment(
                session,
                user_id=context.user.id,
                code=code,
                secret_key=self.runtime.settings.secret_keys,
                now=now,
                source=source,
            )

        return check

    def committed(self, request: Request, context: Enrolling, outcome: Committed) -> Response:
        request.session.pop("enrol_uid", None)
        return self.pages.pages.render(
            request,
            "enrol_done.html",
            {
                "title": "Your authenticator app is set up",
                "user": context.user,
                "codes": outcome.result,
            },
        )

    def already_used(self, context: Enrolling) -> Refusal:
        return Refusal(409, "This link has been used", USED)

    def refused(self, context: Enrolling, message: str) -> Refusal:
        return Refusal(409, "Cannot set up", message)

"""What every page that opens a link shares: the refusal that stops a
request (shown as a problem page by the one guard), the checks of a signed
link and of the person signed in (``open_link``, run first by every such
page), and reading a posted form."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from mailflow.core import events, pending
from mailflow.core.links import TokenExpired, TokenInvalid, TokenService
from mailflow.core.models import PendingAction, User
from mailflow.core.pages.rendering import Pages
from mailflow.core.pages.security import csrf_ok, route_template, session_user, token_digests

CODE_FIELD = "code"

EXPIRED = (
    "This link has expired. Nothing has been recorded. Use a newer email about the alert, "
    "or reply to the alert email."
)
INVALID = (
    "This link is not valid: it may have been changed or cut short. Nothing has been "
    "recorded. Open it again from the email, or copy the whole address."
)
REPLACED = (
    "This link was sent before your access was removed, so it no longer works. Nothing has "
    "been recorded. Use a link from an email sent since you were added again."
)
SOMEONE_ELSE = (
    "This link was sent to someone else. Nothing has been recorded. If it was forwarded "
    "to you, ask for your own alert email. If you share this computer, sign out first."
)
FORM_EXPIRED = (
    "This form has expired, or was not sent from this service. Nothing has been recorded. "
    "Go back, reload the page and try again."
)


class Refusal(Exception):
    """The request cannot go on; shown as a page with this status."""

    def __init__(
        self,
        status_code: int,
        title: str,
        message: str,
        *,
        sign_out: bool = False,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message
        self.sign_out = sign_out
        self.details = details or []


def link_predates_removal(user: User, issued_at: datetime) -> bool:
    """Whether a link signed at ``issued_at`` was sent before the person
    was last removed (and so must not work even if they were added again).
    Whole seconds, as links carry them."""
    if user.links_valid_after is None:
        return False
    return int(issued_at.timestamp()) < int(user.links_valid_after.timestamp())


def guarded(
    pages: Pages, request: Request, handler: Callable[..., Response], *args: Any
) -> Response:
    """``handler(request, *args)``, with a refusal shown as its problem page."""
    try:
        return handler(request, *args)
    except Refusal as refusal:
        events.refused(
            refusal.title,
            via="web",
            status=refusal.status_code,
            route=route_template(request),
            **token_digests(request),
        )
        return pages.problem(
            request,
            refusal.status_code,
            refusal.title,
            refusal.message,
            details=refusal.details,
            sign_out=refusal.sign_out,
        )


def verify_token(tokens: TokenService, token: str, now: datetime) -> dict[str, Any]:
    try:
        return tokens.verify(token, now=now)
    except TokenExpired:
        raise Refusal(410, "This link has expired", EXPIRED) from None
    except TokenInvalid:
        raise Refusal(400, "This link is not valid", INVALID) from None


def refuse_links_from_before_removal(tokens: TokenService, token: str, user: User) -> None:
    if link_predates_removal(user, tokens.issued_at(token)):
        raise Refusal(410, "This link no longer works", REPLACED)


def int_field(payload: dict[str, Any], key: str) -> int:
    """A whole number a link names, or the link is not valid."""
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Refusal(400, "This link is not valid", INVALID)
    return value


def linked_action(
    session: Session, payload: dict[str, Any], *, kind: str, id_field: str, nonce_field: str
) -> tuple[PendingAction, str]:
    """The pending action a link names (its id and token under these keys
    of the payload) and the token, if the action is this kind's and the
    link's person's ("u"); otherwise the refusal of a link not valid."""
    found = payload.get(nonce_field)
    token = found if isinstance(found, str) else ""
    action = pending.find(session, action_id=int_field(payload, id_field), kind=kind, token=token)
    if action is None or action.user_id != int_field(payload, "u"):
        raise Refusal(400, "This link is not valid", INVALID)
    return action, token


def check_session_user(request: Request, user_id: int) -> None:
    signed_in = session_user(request)
    if signed_in is not None and signed_in != user_id:
        raise Refusal(403, "This link was sent to someone else", SOMEONE_ELSE, sign_out=True)


def open_link(
    request: Request,
    tokens: TokenService,
    token: str,
    form: dict[str, Any] | None,
    now: datetime,
) -> tuple[dict[str, Any], int]:
    """The checks every page opening a signed link makes first, before it
    reads the database: a posted form's CSRF token, the link's signature
    and age, the person it names ("u"), and that no one else is signed in
    (a forwarded link).  Returns the link's payload and that person's id."""
    if form is not None and not csrf_ok(request, form):
        raise Refusal(403, "This form has expired", FORM_EXPIRED)
    payload = verify_token(tokens, token, now)
    user_id = int_field(payload, "u")
    check_session_user(request, user_id)
    return payload, user_id


def form_dict(form: Any) -> dict[str, Any]:
    """A posted form as a dict; fields given more than once become lists."""
    out: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        out[key] = values if len(values) > 1 or key == "also" else values[0]
    return out

"""What the two pages of asking for access share: the person a link
names, and the page after a request is committed."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from mailflow.core.models import User
from mailflow.core.pages.committing import Committed
from mailflow.core.pages.refusals import INVALID, Refusal
from mailflow.core.pages.rendering import Pages

REMOVED = "Your access to this service has been removed. Nothing has been asked."


def active_person(session: Session, user_id: int) -> User:
    """The person a link names, refused when unknown or removed."""
    user = session.get(User, user_id)
    if user is None:
        raise Refusal(400, "This link is not valid", INVALID)
    if not user.active:
        raise Refusal(403, "Your access has been removed", REMOVED)
    return user


def requested_page(pages: Pages, request: Request, outcome: Committed) -> Response:
    """The page after a request is committed: what was sent, what not."""
    assert isinstance(outcome.result, tuple)
    opened, skipped = outcome.result
    return pages.render(
        request,
        "access_requested.html",
        {"title": "Request sent", "opened": opened, "skipped": skipped},
    )

"""The two ways an administrator decides a request from their email: the
Approve and Deny links (``/access/TOKEN/approve|deny``, naming the request
and the administrator) and the reply key of that administrator's email
about that request.  Made here for the emails, checked by the pages and
the reply handler."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.mail.addresses import new_key
from mailflow.core.models import AccessDecisionKey, AccessRequest, User


class Verb(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"


def decision_token(settings: Settings, request_id: int, user_id: int, now: datetime) -> str:
    """A token naming the request ("r") and the administrator ("u")."""
    return links.ACCESS_DECIDE_LINK.tokens(settings).sign({"r": request_id, "u": user_id}, now)


def decision_link(
    settings: Settings, request_id: int, user_id: int, verb: Verb, now: datetime
) -> str:
    """The whole address of the page that shows, then commits, ``verb``."""
    token = decision_token(settings, request_id, user_id, now)
    return f"{links.ACCESS_DECIDE_LINK.url(settings, token)}/{verb.value}"


def new_decision_key(
    session: Session, *, request: AccessRequest, administrator: User, now: datetime
) -> str:
    """A reply key for one administrator's email about one request."""
    key = new_key()
    session.add(
        AccessDecisionKey(key=key, request_id=request.id, user_id=administrator.id, created_at=now)
    )
    session.flush()
    return key

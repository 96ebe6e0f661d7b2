"""The email every administrator of an organisation gets about a confirmed
access request, with Approve and Deny links and a reply form (and the
one reminder).  PLACEHOLDER in the groundwork commit: the deciding branch
writes it; the requests branch only calls ``send_to_deciders``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import AccessRequest


def send_to_deciders(
    session: Session, settings: Settings, *, request: AccessRequest, now: datetime
) -> None:
    """Queue, in the caller's transaction, the decision email to every
    active administrator of the request's organisation (or, with none, to
    MAILFLOW_SERVICE_DESK)."""
    # Written on the deciding branch; until it lands, nothing is sent.
    return None

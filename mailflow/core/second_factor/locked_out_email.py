"""The email a person gets when wrong codes for their account make
someone wait: it may have been them, or someone holding one of their
links.  It says nothing about the codes typed."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.mail.one_off import send_one_off
from mailflow.core.models import User
from mailflow.core.outgoing import recent_count

LOCKED_OUT_KIND = "locked_out"
# One warning an hour is enough to act on; an attacker changing address
# should not be able to fill the person's inbox.
AT_MOST_ONE_PER = timedelta(hours=1)


def queue_locked_out_email(
    session: Session, settings: Settings, *, user: User, until: datetime, now: datetime
) -> bool:
    """Queue, in the caller's transaction, the warning to the person,
    unless they were warned in the last hour; returns whether it was."""
    if recent_count(
        session, recipient=user.email, kinds=[LOCKED_OUT_KIND], since=now - AT_MOST_ONE_PER
    ):
        return False
    send_one_off(
        session,
        settings,
        template="locked_out",
        context={"recipient_name": user.name, "until": until, "at": now},
        to=user,
        kind=LOCKED_OUT_KIND,
        now=now,
    )
    return True

"""A delivery report sent to one of our bounce addresses: the alert email or
the one-off email whose bounce key it names is marked bounced.  A bounced
welcome email is also reported to the administrators of the person's
organisations, who can put the address right.

Nothing here answers the report itself, so nothing loops: the notice to
the administrators goes to them, from a bounce address of its own, and a
report about that notice is only recorded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.alerts.deliveries import record_bounce
from mailflow.config import Settings
from mailflow.core.models import User
from mailflow.core.outgoing import find_by_bounce_key, record_outgoing_bounce
from mailflow.people.welcome_email import WELCOME_KIND, queue_welcome_bounced_notices


def record_bounce_report(
    session: Session, settings: Settings, *, bounce_key: str, description: str, now: datetime
) -> str | None:
    """Record the report in the caller's transaction; returns what became
    of it, or None when the key names no email of ours."""
    delivery = record_bounce(session, bounce_key=bounce_key, description=description, now=now)
    if delivery is not None:
        return f"delivery {delivery.id} {description}"
    email = find_by_bounce_key(session, bounce_key)
    if email is None:
        return None
    first = record_outgoing_bounce(session, email, description=description, now=now)
    outcome = f"{email.kind} email {email.id} {description}"
    # A second report about the same welcome tells no one again.
    if first and email.kind == WELCOME_KIND and email.user_id is not None:
        person = session.get_one(User, email.user_id)
        told = queue_welcome_bounced_notices(
            session, settings, user=person, report=description, now=now
        )
        outcome += f"; {told} administrator{'' if told == 1 else 's'} told"
    return outcome

"""The checks every inbound message passes before any handler sees it, in
one place, each giving the outcome stored with a message it stops."""

from __future__ import annotations

from mailflow.core.models import User
from mailflow.gateway.context import InboundContext
from mailflow.gateway.inbound_messages import is_duplicate
from mailflow.gateway.reading import InboundReading


def unusable(context: InboundContext) -> str | None:
    """Why nothing may be done with the message at all: a copy of one
    already received, or one that could not be read."""
    if is_duplicate(context.session, context.message):
        return "a copy of a message already received"
    return context.reading.unreadable


def automatic(reading: InboundReading) -> str | None:
    """Why the message must get no answer because a machine sent it
    (invariant 6).  Bounces are automatic too: they are routed before this."""
    if reading.automatic:
        return f"automatic mail ({reading.automatic}): no answer"
    return None


def untrusted_sender(reading: InboundReading, person: User) -> str | None:
    """Why the reply does not count as the key's person's: its strict From
    (read from the raw header) is missing or someone else's, or our own
    server's DMARC verdict does not vouch for it."""
    if reading.sender is None:
        return f"no trustworthy From address: {reading.sender_problem}"
    if reading.sender != person.email.lower():
        # Never answer: the reply address may have been forwarded, and an
        # answer would tell a stranger about the alert.
        return f"sent from {reading.sender}, not the person the reply address belongs to"
    return reading.dmarc_problem

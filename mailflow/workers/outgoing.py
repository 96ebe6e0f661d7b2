"""Sending one queued email (a confirmation request or an error reply)."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailflow.core.mail.transport import Envelope, OutgoingMessage, send_now
from mailflow.core.models import OutgoingEmail, OutgoingState
from mailflow.core.outgoing import claim_outgoing, record_outgoing_result
from mailflow.core.runtime import Runtime


def send_outgoing(runtime: Runtime, email_id: int) -> datetime | None:
    """Send the email if it is still queued and due.  Returns when to try
    again after a temporary failure, else None."""
    with runtime.readers() as session:
        email = session.get(OutgoingEmail, email_id)
        if email is None or email.state != OutgoingState.QUEUED:
            return None
        if email.next_attempt_at > runtime.clock():
            return email.next_attempt_at
    # Claimed in a transaction of its own, so that a job delivered twice at
    # once sends once; a sender that dies leaves it to be sent again when
    # the hold runs out.
    hold = timedelta(seconds=runtime.settings.send_lease_seconds)
    with runtime.sessions.begin() as session:
        email = claim_outgoing(session, email_id, now=runtime.clock(), hold=hold)
        if email is None:
            current = session.get_one(OutgoingEmail, email_id)
            return current.next_attempt_at if current.state == OutgoingState.QUEUED else None
        message = OutgoingMessage(Envelope(email.mail_from, email.recipient), email.raw)
    result = send_now(runtime.transport, message)
    now = runtime.clock()
    with runtime.sessions.begin() as session:
        email = session.get_one(OutgoingEmail, email_id)
        return record_outgoing_result(session, email, result, now=now, policy=runtime.send_policy)

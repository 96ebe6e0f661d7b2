"""Sending queued emails (confirmation requests, receipts, error replies
and every other email but an alert's), a batch at a time: claimed in one
transaction, sent over the relay's connections at once, their lease
renewed while the relay takes its time, and every outcome recorded in one
more transaction."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from mailflow.core.jobs import JobResult
from mailflow.core.leases import RENEWALS_PER_LEASE
from mailflow.core.mail.transport import Envelope, Outcome, OutgoingMessage, SendResult
from mailflow.core.models import OutgoingEmail, OutgoingState
from mailflow.core.outgoing import (
    claim_outgoing_emails,
    record_outgoing_result,
    renew_outgoing_claims,
)
from mailflow.core.runtime import Runtime

log = logging.getLogger(__name__)


def send_outgoing(runtime: Runtime, email_id: int) -> datetime | None:
    """Send the email if it is still queued and due.  Returns when to try
    again after a temporary failure, else None."""
    return send_outgoing_emails(runtime, [email_id])[email_id]


def send_outgoing_batch(
    runtime: Runtime, payloads: dict[int, dict[str, Any]]
) -> dict[int, JobResult]:
    """The batch job: one job per email."""
    emails = {job_id: int(payload["outgoing_email_id"]) for job_id, payload in payloads.items()}
    results = send_outgoing_emails(runtime, list(emails.values()))
    return {job_id: results[email_id] for job_id, email_id in emails.items()}


def send_outgoing_emails(runtime: Runtime, email_ids: list[int]) -> dict[int, datetime | None]:
    """Send those of the emails that are queued and due.  For each, when
    to try again (not yet due, deferred, or another sender holds it), or
    None when it has reached an end state."""
    results: dict[int, datetime | None] = dict.fromkeys(email_ids)
    lease = timedelta(seconds=runtime.settings.send_lease_seconds)
    # Claimed in a transaction of their own, so that a job delivered twice
    # at once sends once; a sender that dies leaves them to be sent again
    # when its lease runs out.
    with runtime.sessions.begin() as session:
        claimed = claim_outgoing_emails(session, email_ids, now=runtime.clock(), hold=lease)
        messages = {
            row.id: OutgoingMessage(Envelope(row.mail_from, row.recipient), row.raw)
            for row in session.execute(
                select(
                    OutgoingEmail.id,
                    OutgoingEmail.mail_from,
                    OutgoingEmail.recipient,
                    OutgoingEmail.raw,
                ).where(OutgoingEmail.id.in_(claimed))
            )
        }
        others = [email_id for email_id in email_ids if email_id not in messages]
        for email_id, state, next_attempt_at in session.execute(
            select(OutgoingEmail.id, OutgoingEmail.state, OutgoingEmail.next_attempt_at).where(
                OutgoingEmail.id.in_(others)
            )
        ):
            results[email_id] = next_attempt_at if state == OutgoingState.QUEUED else None
    if not messages:
        return results
    sent = runtime.transport.run(_send_all(runtime, messages, lease))
    now = runtime.clock()
    with runtime.sessions.begin() as session:
        # Only those still queued: had this sender's hold run out and
        # another sent one meanwhile, its result is the other's to record.
        for email in session.scalars(
            select(OutgoingEmail).where(
                OutgoingEmail.id.in_(sent), OutgoingEmail.state == OutgoingState.QUEUED
            )
        ):
            results[email.id] = record_outgoing_result(
                session, email, sent[email.id], now=now, policy=runtime.send_policy
            )
    return results


async def _send_all(
    runtime: Runtime, messages: dict[int, OutgoingMessage], lease: timedelta
) -> dict[int, SendResult]:
    """Send every message at once (the transport's connections set the
    pace), renewing the lease on those still out while the relay takes
    its time."""
    tasks = {
        email_id: asyncio.ensure_future(runtime.transport.send(message))
        for email_id, message in messages.items()
    }
    waiting = set(tasks.values())
    while waiting:
        _, waiting = await asyncio.wait(waiting, timeout=lease.total_seconds() / RENEWALS_PER_LEASE)
        if waiting:
            out = [email_id for email_id, task in tasks.items() if task in waiting]
            now = runtime.clock()
            try:
                with runtime.sessions.begin() as session:
                    renew_outgoing_claims(session, out, now=now, until=now + lease)
            except Exception:
                # The sends go on and must still be recorded; a missed
                # renewal only risks a second sender once the hold ends.
                log.exception("renewing the hold on emails being sent failed; trying again")
    return {email_id: _result(task) for email_id, task in tasks.items()}


def _result(task: asyncio.Task[SendResult]) -> SendResult:
    try:
        return task.result()
    except Exception as exc:
        return SendResult(Outcome.TEMPORARY, f"could not send: {exc!r}")

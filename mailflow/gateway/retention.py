"""Deleting inbound messages nobody needs any more: those processing
ignored, once MAILFLOW_INBOUND_RETENTION_DAYS have passed.  Run by
`mailflow inbound purge`, and at most hourly by the SMTP edge (there is no
scheduler yet)."""

from __future__ import annotations

import logging
from datetime import timedelta

from mailflow.core.runtime import Runtime
from mailflow.gateway.inbound_messages import PURGE_BATCH, purge_ignored_messages

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600.0


def purge_expired_inbound(runtime: Runtime, *, actor: str) -> int:
    """Delete every ignored message past the retention period, a batch per
    commit; returns how many."""
    keep = timedelta(days=runtime.settings.inbound_retention_days)
    total = 0
    while True:
        now = runtime.clock()
        with runtime.sessions.begin() as session:
            purged = purge_ignored_messages(
                session, received_before=now - keep, now=now, actor=actor
            )
        total += purged
        if purged < PURGE_BATCH:
            break
    if total:
        log.info("purged %d ignored inbound messages older than %s days", total, keep.days)
    return total

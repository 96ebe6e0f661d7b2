"""What each kind of job runs: the one registry the queue worker asks.
A capability that queues a new kind of job adds one line here.

A handler runs one job and returns when it should run again (None: it is
done).  A batch handler runs many jobs of its kind at once, with one claim
and as few transactions as the work allows, and returns the same for each
job, or the exception that job alone failed with; the dispatcher groups
due jobs of such a kind into one queue message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from mailflow.alerts.fanout import deliver_alert
from mailflow.alerts.issuing import DELIVER_ALERT
from mailflow.core.jobs import JobResult
from mailflow.core.outgoing import SEND_EMAIL
from mailflow.core.runtime import Runtime
from mailflow.deadlines.chaser_emails import send_chasers
from mailflow.deadlines.chasing import SEND_CHASERS
from mailflow.gateway.inbound_messages import PROCESS_INBOUND
from mailflow.reports.digest_job import SEND_DIGESTS, send_digests
from mailflow.workers.inbound import process_inbound_batch
from mailflow.workers.outgoing import send_outgoing_batch

Handler = Callable[[Runtime, dict[str, Any]], datetime | None]
BatchHandler = Callable[[Runtime, dict[int, dict[str, Any]]], dict[int, JobResult]]

HANDLERS: dict[str, Handler] = {
    DELIVER_ALERT: lambda runtime, payload: deliver_alert(runtime, int(payload["alert_id"])),
    SEND_CHASERS: send_chasers,
    SEND_DIGESTS: send_digests,
}

BATCH_HANDLERS: dict[str, BatchHandler] = {
    PROCESS_INBOUND: process_inbound_batch,
    SEND_EMAIL: send_outgoing_batch,
}

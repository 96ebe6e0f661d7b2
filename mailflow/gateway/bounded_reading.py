"""Reading inbound mail in a child process, bounded in time (invariant 7).

The size limits in ``gateway.raw_headers`` keep the known slow paths of the
``email`` package away; what they miss is cut off here, after
``MAILFLOW_INBOUND_READ_SECONDS``, by the core's bounded calls (the job
then marks the message failed with that reason, never retried by itself).
"""

from __future__ import annotations

from mailflow.core.bounded_calls import TookTooLong
from mailflow.core.runtime import Runtime
from mailflow.gateway.reading import InboundReading, read_inbound


class ReadingTookTooLong(Exception):
    """A message took longer to read than the bound allows."""


def read_within_bound(
    runtime: Runtime, raw: bytes, *, envelope_from: str | None, source: str
) -> InboundReading:
    """The reading of one stored message, or ReadingTookTooLong."""
    seconds = runtime.settings.inbound_read_seconds
    reader = runtime.bounded(read_inbound, InboundReading, seconds)
    try:
        return reader.call(
            raw=raw,
            envelope_from=envelope_from,
            source=source,
            authserv_id=runtime.settings.authserv_id,
        )
    except TookTooLong as exc:
        raise ReadingTookTooLong(f"reading the message {exc}") from exc

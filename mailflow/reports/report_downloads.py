"""The report's tables as CSV downloads: one alert's organisations
(``/report/TOKEN/alerts/REF.csv``) or every reported alert's one after
another (``/report/TOKEN/alerts.csv``), with the page's filters, as at its
time.  Streamed: the rows come from the database a thousand at a time
(``alert_rows``) and leave as chunks, in a session of the stream's own
that stays open while it runs and is closed when it ends (or the browser
goes away), so a national alert's 20,000 rows never sit in memory."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mailflow.core.runtime import Runtime
from mailflow.reports.csv_export import CsvWriter
from mailflow.reports.figures import alert_rows
from mailflow.reports.report_access import Auditor, reported_alert
from mailflow.reports.report_query import ReportQuery
from mailflow.reports.reported_alerts import alerts_in_report

# Rows written before a chunk is sent.
CHUNK_ROWS = 500
# Excel reads a CSV as UTF-8 only when it starts with the byte order mark.
BYTE_ORDER_MARK = "\ufeff"
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9-]")

log = logging.getLogger(__name__)


class ReportDownloads:
    def __init__(self, runtime: Runtime) -> None:
        self.readers = runtime.readers
        self.zone = runtime.settings.zone

    def one_alert(
        self,
        request: Request,
        session: Session,
        auditor: Auditor,
        query: ReportQuery,
        now: datetime,
    ) -> Response:
        as_at = query.when(now)
        found = reported_alert(session, request, as_at=as_at)
        return self._csv([(found.id, found.reference)], query, as_at, found.reference)

    def all_alerts(
        self,
        request: Request,
        session: Session,
        auditor: Auditor,
        query: ReportQuery,
        now: datetime,
    ) -> Response:
        as_at = query.when(now)
        alerts = [(a.id, a.reference) for a in alerts_in_report(session, as_at=as_at)]
        return self._csv(alerts, query, as_at, "alerts")

    def _csv(
        self, alerts: list[tuple[int, str]], query: ReportQuery, as_at: datetime, name: str
    ) -> Response:
        stamp = f"{as_at.astimezone(UTC):%Y%m%dT%H%MZ}"
        filename = f"{_UNSAFE_IN_NAME.sub('', name)}-as-at-{stamp}.csv"
        return StreamingResponse(
            self._chunks(alerts, query, as_at),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _chunks(
        self, alerts: list[tuple[int, str]], query: ReportQuery, as_at: datetime
    ) -> Iterator[bytes]:
        out = io.StringIO()
        out.write(BYTE_ORDER_MARK)
        writer = CsvWriter(out)
        try:
            with self.readers() as session:
                for alert_id, reference in alerts:
                    rows = alert_rows(
                        session,
                        alert_id,
                        as_at=as_at,
                        zone=self.zone,
                        only=query.only,
                        sort=query.order,
                    )
                    while chunk := list(islice(rows, CHUNK_ROWS)):
                        writer.write_rows(reference, chunk)
                        yield _taken(out)
        except Exception:
            # The response has begun, so the app's error page and its log
            # line never come: said here (no token is in this frame), the
            # download then ends cut short.
            log.exception("a CSV download stopped part way (alerts %s)", [a for a, _ in alerts])
            raise
        yield _taken(out)


def _taken(out: io.StringIO) -> bytes:
    """What was written since the last chunk, emptied from the buffer."""
    data = out.getvalue().encode("utf-8")
    out.seek(0)
    out.truncate()
    return data

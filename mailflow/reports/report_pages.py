"""The auditors' report page behind the second factor, opened from the
link in each digest (``/report/TOKEN``): every alert open and recently
closed with its figures; per alert, its whole table of organisations
(``/report/TOKEN/alerts/REF``: filtered, sorted, paged, as at any time);
and the same table as CSV (``.../REF.csv``, and every alert's at once,
``/report/TOKEN/alerts.csv``).

Every page of a link shows the code form until the browser has given the
link's auditor's second factor; a posted code is the only thing any of
them writes (the auditor's own verified session), then the page is shown
again by a redirect.  The figures and rows come from ``figures``, as for
every other report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.errors import InvalidInput
from mailflow.core.links import REPORT_LINK
from mailflow.core.models import AlertAudience, Organisation
from mailflow.core.pages.forms import Problems, text
from mailflow.core.pages.refusals import CODE_FIELD, FORM_EXPIRED, Refusal, form_dict, guarded
from mailflow.core.pages.rendering import Pages
from mailflow.core.pages.security import csrf_ok
from mailflow.core.runtime import Runtime
from mailflow.reports.figures import (
    NO_ANSWER,
    SORT_KEYS,
    STATUSES,
    UNREACHABLE,
    alert_figures,
    alert_rows,
    alerts_figures,
)
from mailflow.reports.report_access import Auditor, ReportAccess, reported_alert
from mailflow.reports.report_downloads import ReportDownloads
from mailflow.reports.report_query import PAGE_ROWS, ReportQuery, read_query
from mailflow.reports.reported_alerts import RECENTLY_CLOSED, alerts_in_report
from mailflow.reports.wording import human_duration, percent

BASE = REPORT_LINK.path_prefix + "{token}"
STATUS_LABELS = {
    **{s.value: s.label for s in AnswerStatus},
    NO_ANSWER: "No answer",
    UNREACHABLE: "Unreachable (every email bounced)",
}
COLUMN_LABELS = {
    "code": "Code",
    "name": "Name",
    "type": "Type",
    "parent_code": "Parent",
    "status": "Status",
    "answered_at": "Answered at",
    "next_update_on": "Next update due",
}
assert set(COLUMN_LABELS) == set(SORT_KEYS)

# What one report page shows, once the browser is verified for the auditor.
Show = Callable[[Request, Session, Auditor, ReportQuery, datetime], Response]


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    """The report pages, for the web app to serve (the CSV before the
    alert's page: its address would also match the page's)."""
    report = ReportPages(runtime, pages)
    csv = ReportDownloads(runtime)
    return [
        Route(BASE, report.endpoint(report.overview), methods=["GET", "POST"]),
        Route(BASE + "/alerts.csv", report.download(csv.all_alerts), methods=["GET"]),
        Route(BASE + "/alerts/{reference}.csv", report.download(csv.one_alert), methods=["GET"]),
        Route(BASE + "/alerts/{reference}", report.endpoint(report.alert), methods=["GET", "POST"]),
    ]


class ReportPages:
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.access = ReportAccess(runtime)

    # ---------------------------------------------------------- the shell

    def endpoint(self, show: Show) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            form = form_dict(await request.form()) if request.method == "POST" else None
            return await run_in_threadpool(guarded, self.pages, request, self._serve, show, form)

        return serve

    def download(self, show: Show) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            return await run_in_threadpool(guarded, self.pages, request, self._download, show)

        return serve

    def _serve(self, request: Request, show: Show, form: dict[str, Any] | None) -> Response:
        now = self.runtime.clock()
        if form is not None and not csrf_ok(request, form):
            raise Refusal(403, "This form has expired", FORM_EXPIRED)
        with self.runtime.readers() as session:
            auditor = self.access.auditor(session, request.path_params["token"], now)
            verified = self.access.verified(session, request, auditor.user_id, now)
            if verified and form is None:
                return show(request, session, auditor, self._query(request, now), now)
        if verified:
            return self._again(request)
        if form is None:
            return self._code_page(request, auditor, Problems())
        return self._confirm(request, auditor, form, now)

    def _download(self, request: Request, show: Show) -> Response:
        now = self.runtime.clock()
        with self.runtime.readers() as session:
            auditor = self.access.auditor(session, request.path_params["token"], now)
            if not self.access.verified(session, request, auditor.user_id, now):
                raise Refusal(
                    403,
                    "Confirm it is you first",
                    "The download is only for a browser that has given your security code in "
                    "the last 10 minutes. Open the report link from your digest, enter the code "
                    "from your authenticator app, then download again.",
                )
            return show(request, session, auditor, self._query(request, now), now)

    def _query(self, request: Request, now: datetime) -> ReportQuery:
        try:
            return read_query(request.query_params, now=now, zone=self.runtime.settings.zone)
        except InvalidInput as exc:
            raise Refusal(
                400,
                "The report cannot be shown that way",
                f"{exc.where}: {exc.problem}. Nothing has been changed.",
            ) from None

    def _confirm(
        self, request: Request, auditor: Auditor, form: dict[str, Any], now: datetime
    ) -> Response:
        problems = Problems()
        code = text(form, CODE_FIELD)
        if not code:
            problems.add(CODE_FIELD, "Enter the code from your authenticator app")
            return self._code_page(request, auditor, problems, status_code=400)
        refused = self.access.confirm_code(request, auditor.user_id, code, now)
        if refused is None:
            return self._again(request)
        problems.add(CODE_FIELD, refused.message)
        status_code = 429 if refused.locked_out else 400
        return self._code_page(request, auditor, problems, status_code=status_code)

    @staticmethod
    def _again(request: Request) -> Response:
        """The page just posted to, shown by GET (ours: only its path and
        query are used)."""
        query = request.url.query
        return RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)

    def _code_page(
        self, request: Request, auditor: Auditor, problems: Problems, *, status_code: int = 200
    ) -> Response:
        return self.pages.render(
            request,
            "report_code.html",
            {
                "title": "Confirm it is you to see the report",
                "someone_else": self.access.someone_else_verified(request, auditor.user_id),
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

    # ---------------------------------------------------------- the pages

    def _shared(self, request: Request, query: ReportQuery) -> dict[str, Any]:
        """What both pages show: the links (each keeps the token, which is
        in the path), the as-at field and how figures are written."""
        home = REPORT_LINK.path_prefix + request.path_params["token"]
        zone = self.runtime.settings.zone
        return {
            "links": {"home": home, "alerts": home + "/alerts/"},
            "query": query,
            "zone_name": self.runtime.settings.timezone,
            "as_at_value": f"{query.as_at.astimezone(zone):%Y-%m-%dT%H:%M}" if query.as_at else "",
            "percent": percent,
            "hours": human_duration,
        }

    def overview(
        self,
        request: Request,
        session: Session,
        auditor: Auditor,
        query: ReportQuery,
        now: datetime,
    ) -> Response:
        as_at = query.when(now)
        zone = self.runtime.settings.zone
        alerts = alerts_in_report(session, as_at=as_at)
        return self.pages.render(
            request,
            "report.html",
            {
                "title": "Cyber alerts: the report",
                "as_at": as_at,
                "figures": alerts_figures(session, [a.id for a in alerts], as_at=as_at, zone=zone),
                "recent_days": RECENTLY_CLOSED.days,
                **self._shared(request, query),
            },
        )

    def alert(
        self,
        request: Request,
        session: Session,
        auditor: Auditor,
        query: ReportQuery,
        now: datetime,
    ) -> Response:
        as_at = query.when(now)
        zone = self.runtime.settings.zone
        found = reported_alert(session, request, as_at=as_at)
        rows = list(
            alert_rows(
                session,
                found.id,
                as_at=as_at,
                zone=zone,
                only=query.only,
                sort=query.order,
                limit=PAGE_ROWS + 1,
                offset=query.offset,
            )
        )
        # The types among the organisations the alert went to, not every
        # type there is.
        types = session.scalars(
            select(Organisation.type)
            .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
            .where(AlertAudience.alert_id == found.id)
            .distinct()
            .order_by(Organisation.type)
        )
        return self.pages.render(
            request,
            "report_alert.html",
            {
                "title": f"{found.reference}: every organisation",
                "as_at": as_at,
                "f": alert_figures(session, found.id, as_at=as_at, zone=zone),
                "rows": rows[:PAGE_ROWS],
                "first_row": query.offset + 1,
                "more": len(rows) > PAGE_ROWS,
                "statuses": [(s, STATUS_LABELS[s]) for s in STATUSES],
                "status_labels": STATUS_LABELS,
                "types": list(types),
                "columns": COLUMN_LABELS,
                "page_rows": PAGE_ROWS,
                **self._shared(request, query),
            },
        )

"""The digest emails: the full digest (per open alert its figures and
chart, then who has not answered, the ``unable`` answers, what changed
and the link to the report page) and the one-line "no changes" email.

Each chart is a PNG attached inline (``multipart/related``, referred to
by Content-ID): Outlook and most webmail show neither SVG nor ``data:``
images.  The same figures are in the table beside it and in the text
part, so nothing is lost where images are blocked."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from mailflow.config import Settings
from mailflow.core.mail.messages import build_message, notification_headers
from mailflow.core.mail.templates import render_service_email
from mailflow.core.models import User
from mailflow.reports.chart import Chart
from mailflow.reports.digest_changes import Change
from mailflow.reports.digest_content import AlertDigest
from mailflow.reports.digest_view import ChartImage, alert_view
from mailflow.reports.report_link import report_url

DIGEST_KIND = "digest"
NO_CHANGES_KIND = "digest-no-changes"
# The chart's drawn width: the email's 640-pixel column less its padding.
CHART_WIDTH_PX = 560


@dataclass(frozen=True)
class DigestNumbering:
    """This digest's number and local date, and the previous one's (None
    for an auditor's first)."""

    number: int
    day: str
    previous_number: int | None


@dataclass(frozen=True)
class InlineImage:
    cid: str
    png: bytes


def long_day(moment: datetime, settings: Settings) -> str:
    """'1 December 2026', on the local clock."""
    local = moment.astimezone(settings.zone)
    return f"{local.day} {local:%B %Y}"


def inline_charts(
    charts: list[Chart], mail_domain: str
) -> tuple[list[ChartImage], list[InlineImage]]:
    """Each alert's chart (drawn by mailflow/reports/chart.py) as the HTML
    refers to it, under a Content-ID of this message's own, and the
    images to attach."""
    views = []
    images = []
    for drawn in charts:
        cid = new_cid(mail_domain)
        views.append(ChartImage(cid=cid, alt=drawn.alt, width=drawn.width, height=drawn.height))
        images.append(InlineImage(cid=cid, png=drawn.png))
    return views, images


def digest_message(
    settings: Settings,
    *,
    auditor: User,
    alerts: list[AlertDigest],
    charts: list[Chart],
    changed: list[Change],
    numbering: DigestNumbering,
    now: datetime,
) -> bytes:
    """The full digest; ``charts`` are the alerts' charts, in the same
    order.  Composed outside any transaction: it is queued as bytes."""
    chart_views, images = inline_charts(charts, settings.mail_domain)
    context: dict[str, object] = {
        "recipient_name": auditor.name,
        "numbering": numbering,
        "alerts": [alert_view(a, view) for a, view in zip(alerts, chart_views, strict=True)],
        "changed": changed,
        "report_url": report_url(settings, user_id=auditor.id, now=now),
    }
    message = _message(settings, "digest", context, auditor, numbering, now)
    _attach_inline(message, images)
    return bytes(message)


def no_changes_message(
    settings: Settings,
    *,
    auditor: User,
    open_alerts: int,
    numbering: DigestNumbering,
    now: datetime,
) -> bytes:
    """The one-line "no changes" email."""
    context: dict[str, object] = {
        "recipient_name": auditor.name,
        "numbering": numbering,
        "open_alerts": open_alerts,
        "report_url": report_url(settings, user_id=auditor.id, now=now),
    }
    return bytes(_message(settings, "digest_no_changes", context, auditor, numbering, now))


def _message(
    settings: Settings,
    template: str,
    context: dict[str, object],
    auditor: User,
    numbering: DigestNumbering,
    now: datetime,
) -> EmailMessage:
    rendered = render_service_email(settings, template, context)
    headers = notification_headers(
        settings, auditor, now, extra={"X-Mailflow-Digest": str(numbering.number)}
    )
    return build_message(rendered, headers)


def _attach_inline(message: EmailMessage, images: list[InlineImage]) -> None:
    """Put the images beside the HTML part, which becomes a
    multipart/related inside the multipart/alternative."""
    if not images:
        return
    html = next(p for p in message.iter_parts() if p.get_content_type() == "text/html")
    assert isinstance(html, EmailMessage)
    for image in images:
        html.add_related(
            image.png, maintype="image", subtype="png", cid=f"<{image.cid}>", disposition="inline"
        )


def new_cid(mail_domain: str) -> str:
    """A Content-ID of our domain that no other message shares."""
    return f"chart.{secrets.token_hex(8)}@{mail_domain}"

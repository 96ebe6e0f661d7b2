"""The link in each digest to the auditor's report page: bound to the
auditor (``u``), expiring (core/links.REPORT_LINK), and read-only, so it
need not be single-use; the page asks for the second factor first."""

from __future__ import annotations

from datetime import datetime

from mailflow.config import Settings
from mailflow.core import links

USER_FIELD = "u"


def report_url(settings: Settings, *, user_id: int, now: datetime) -> str:
    return links.make(settings, links.REPORT_LINK, {USER_FIELD: user_id}, now)

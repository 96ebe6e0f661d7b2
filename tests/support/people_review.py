"""Helpers for the review of access: making the seeded administrators due
(their role given a period ago), running a pass, and the links a review
email carries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from mailflow.access.people_review import send_due_reviews
from mailflow.core.models import Membership, OutgoingEmail
from mailflow.core.runtime import utc_now
from mailflow.core.scheduling import SchedulerPass
from tests.support.pages import Web
from tests.support.people_admin import emails, text_of

REVIEW = "people_review"


def make_due(web: Web, days: int = 91) -> None:
    """Every role given ``days`` ago: the administrators are due a review."""
    session = web.db()
    session.execute(update(Membership).values(created_at=utc_now() - timedelta(days=days)))
    session.commit()


def run_pass(web: Web, now: datetime | None = None) -> list[str]:
    return send_due_reviews(SchedulerPass(web.runtime, now or utc_now()))


@dataclass(frozen=True)
class ReviewLinks:
    all_right: str
    # The remove link for each person listed, by address.
    remove: dict[str, str]


def review_links(email: OutgoingEmail) -> ReviewLinks:
    text = text_of(email)
    link = r"https://mailflow\.test(/people/review/[A-Za-z0-9_.\-]+)"
    removes = re.findall(rf"<([^>\s]+)>: [a-z-]+\s+To remove them: {link}", text)
    [all_right] = re.findall(rf"If all of these are still right, say so here:\s+{link}", text)
    return ReviewLinks(all_right, dict(removes))


def the_review(web: Web) -> ReviewLinks:
    [email] = emails(web.db(), REVIEW)
    return review_links(email)

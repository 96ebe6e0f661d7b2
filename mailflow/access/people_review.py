"""The review of access: every ``access_review_days`` each active
administrator of each open organisation is asked "these people can answer
for ORG: still right?", with a one-click "all still right" link and a
"remove" link for each person (the pages are in
``people_review_pages.py``).

Rounds count review periods since a fixed epoch, so every pass, whichever
process runs it, agrees on the round.  An administrator is due when they
have been administrator there for a whole period and have no review row
for the current round.  One query finds who is due (at most ``BATCH`` a
pass: the next pass takes the rest), and each email is queued in the
transaction that writes its ``AccessReview`` row: the row's unique key
(organisation, administrator, round) makes a second pass, or two passes
at once, skip it rather than send it twice.  No I/O beyond the database;
the clock is passed in.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailflow.access.people_changes import people_of
from mailflow.access.people_emails import REVIEW_KIND, help_context, send_people_email
from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.models import AccessReview, Membership, Organisation, Role, User
from mailflow.core.scheduling import SchedulerPass

log = logging.getLogger(__name__)

# Rounds are counted from here: a fixed day, the same for every process.
EPOCH = date(1970, 1, 1)
# Emails queued by one pass at most; the next pass (a minute later) goes on.
BATCH = 500


def round_of(now: datetime, days: int) -> int:
    """The review round ``now`` falls in."""
    return (now.date() - EPOCH).days // days


@dataclass(frozen=True)
class Due:
    """One administrator of one organisation whose review is due."""

    organisation_id: int
    administrator_id: int


def due_reviews(session: Session, now: datetime, days: int, limit: int = BATCH) -> list[Due]:
    """Who is due a review this round, in one query: active administrators
    of open organisations, administrator there for ``days`` at least, with
    no review row for the round."""
    current = round_of(now, days)
    rows = session.execute(
        select(Membership.organisation_id, Membership.user_id)
        .join(User, User.id == Membership.user_id)
        .join(Organisation, Organisation.id == Membership.organisation_id)
        .outerjoin(
            AccessReview,
            and_(
                AccessReview.organisation_id == Membership.organisation_id,
                AccessReview.administrator_id == Membership.user_id,
                AccessReview.round == current,
            ),
        )
        .where(
            Membership.role == Role.ADMINISTRATOR,
            Membership.created_at <= now - timedelta(days=days),
            User.active.is_(True),
            Organisation.closed_on.is_(None),
            AccessReview.id.is_(None),
        )
        .order_by(Membership.organisation_id, Membership.user_id)
        .limit(limit)
    ).all()
    return [Due(organisation_id, user_id) for organisation_id, user_id in rows]


# What a review link does: "ok" records the review; "rm" removes a person.
ALL_RIGHT = "ok"


def review_link(
    settings: Settings, review: AccessReview, now: datetime, *, remove: int | None = None
) -> str:
    """A review link, bound to its administrator, organisation and round;
    each link is its own (the nonce), so using one leaves the others
    working."""
    payload: dict[str, object] = {
        "u": review.administrator_id,
        "o": review.organisation_id,
        "r": review.id,
        "n": secrets.token_urlsafe(8),
    }
    if remove is None:
        payload["do"] = ALL_RIGHT
    else:
        payload["rm"] = remove
    return links.make(settings, links.REVIEW_LINK, payload, now)


def send_review(session: Session, settings: Settings, due: Due, now: datetime) -> AccessReview:
    """Write this round's review row and queue its email, in the caller's
    transaction; the row is flushed first, so a row written by another
    pass fails here (IntegrityError) before anything is queued."""
    review = AccessReview(
        organisation_id=due.organisation_id,
        administrator_id=due.administrator_id,
        round=round_of(now, settings.access_review_days),
        sent_at=now,
    )
    session.add(review)
    session.flush()
    organisation = session.get_one(Organisation, due.organisation_id)
    administrator = session.get_one(User, due.administrator_id)
    people = people_of(session, organisation.id)
    send_people_email(
        session,
        settings,
        template=REVIEW_KIND,
        context={
            "organisation": organisation,
            "people": [
                (person, review_link(settings, review, now, remove=person.user.id))
                for person in people
            ],
            "all_right_link": review_link(settings, review, now),
            "days": settings.access_review_days,
        }
        | help_context(settings, [organisation.code]),
        to=administrator,
        now=now,
        organisation_id=organisation.id,
    )
    return review


def send_due_reviews(run: SchedulerPass) -> list[str]:
    """The periodic task: queue each due review, one transaction each, so
    one that another pass sent first is skipped and the others go on."""
    settings, now = run.runtime.settings, run.now
    with run.reading() as session:
        due = due_reviews(session, now, settings.access_review_days, limit=BATCH)
    done = []
    for one in due:
        try:
            with run.writing() as session:
                review = send_review(session, settings, one, now)
                sent = f"round {review.round} sent to user {one.administrator_id}"
        except IntegrityError:
            # Another pass wrote this round's row first: it sent the email.
            continue
        except Exception:
            # One bad row must not hold up the others; it is due again next pass.
            log.exception("review of organisation %s not sent", one.organisation_id)
            continue
        done.append(f"review of organisation {one.organisation_id}: {sent}")
    return done

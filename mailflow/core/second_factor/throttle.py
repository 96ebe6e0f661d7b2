"""How wrong second-factor codes slow down whoever types them.

A hard lock-out per person (the old rule: five wrong codes in fifteen
minutes and no code is accepted) let anyone holding one of a person's
links keep that person locked out for good.  Instead, as the larger
identity providers do, wrong codes are counted per person *and source*
(a digest of the client's address, which the web page passes in):

* from one source, the first four wrong codes in a day cost nothing; each
  one after that makes that source wait before its next try, one minute
  after the fifth, doubling with each further one, at most an hour.  Codes
  typed while waiting are refused unread and do not count.  So one
  attacker gets a few dozen guesses a day, and the owner, elsewhere, is
  not held up at all;
* across every source, a hundred wrong codes in a day (an attack from
  many addresses) make everyone wait an hour after the latest: this is the
  one case where an attacker can hold the owner up, and it bounds the
  guesses at about 120 a day however many addresses are used.

Refusing a code that was right but already used (a TOTP step or a
recovery code used before) is not a guess and is not counted: someone
who types a used recovery code thirty times at once holds a real code.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.core.models import MfaFailure

FREE_FAILURES = 4
FIRST_WAIT = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=1)
MEMORY = timedelta(hours=24)
EVERYONE_LIMIT = 100


def wait_after(failures: int) -> timedelta:
    """The wait a source owes after its ``failures``-th wrong code of the day."""
    if failures <= FREE_FAILURES:
        return timedelta(0)
    doublings = min(failures - FREE_FAILURES - 1, 16)
    return min(FIRST_WAIT * (1 << doublings), LONGEST_WAIT)


def _count_and_latest(
    session: Session, user_id: int, now: datetime, source: str | None
) -> tuple[int, datetime | None]:
    query = select(func.count(), func.max(MfaFailure.at)).where(
        MfaFailure.user_id == user_id, MfaFailure.at > now - MEMORY
    )
    if source is not None:
        query = query.where(MfaFailure.source == source)
    count, latest = session.execute(query).one()
    return int(count or 0), latest


def next_try_at(session: Session, *, user_id: int, source: str, now: datetime) -> datetime | None:
    """When ``source`` may next try a code for the person, or None if now."""
    count, latest = _count_and_latest(session, user_id, now, source)
    if latest is not None and latest + wait_after(count) > now:
        return latest + wait_after(count)
    everyone, latest_anywhere = _count_and_latest(session, user_id, now, None)
    if (
        everyone >= EVERYONE_LIMIT
        and latest_anywhere is not None
        and latest_anywhere + LONGEST_WAIT > now
    ):
        return latest_anywhere + LONGEST_WAIT
    return None


def record_failure(
    session: Session, *, user_id: int, source: str, now: datetime
) -> datetime | None:
    """Count a wrong code; returns when the source may try again if this
    one makes it wait, else None."""
    session.add(MfaFailure(user_id=user_id, at=now, source=source))
    session.flush()
    return next_try_at(session, user_id=user_id, source=source, now=now)

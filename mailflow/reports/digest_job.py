"""The ``send_digests`` job: compose each queued digest of a batch, each in
one transaction of its own.

The open alerts are gathered and their charts drawn once for the batch,
as at the job's time; each digest is then composed outside any write
transaction (compared with the auditor's previous digest, numbered,
rendered), and one short transaction claims its row by a conditional
UPDATE (queued -> taken; a second worker finds it taken and does
nothing), checks the numbering still holds, and queues the email in the
outbox.  A crash rolls that back and leaves the row queued for the job's
next run; so each auditor gets each period's digest once.

What is sent: nothing open -> nothing (``skipped``, no number used); a
previous digest and nothing changed since -> the one-line "no changes"
email; otherwise the full digest.  A digest whose auditor has a later
period queued (the worker was down over a period) is skipped: the later
one says the same, more up to date."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.mail.one_off import queue_email_to_person
from mailflow.core.models import Alert, Digest, DigestSchedule, DigestState, NationalRole, User
from mailflow.core.models.digests import SEND_DIGESTS as SEND_DIGESTS
from mailflow.core.runtime import Runtime
from mailflow.reports import digest_changes
from mailflow.reports.chart import Chart, alert_chart
from mailflow.reports.digest_content import AlertDigest, gather_alert
from mailflow.reports.digest_email import (
    CHART_WIDTH_PX,
    DIGEST_KIND,
    NO_CHANGES_KIND,
    DigestNumbering,
    digest_message,
    long_day,
    no_changes_message,
)
from mailflow.reports.digest_scheduling import open_alerts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gathered:
    """Every open alert as at the job's time, with its chart: gathered and
    drawn once for all the batch's digests, before any transaction takes
    the write lock (drawing takes a tenth of a second an alert)."""

    alerts: list[AlertDigest]
    charts: list[Chart]


def gather_open_alerts(runtime: Runtime, now: datetime) -> Gathered:
    with runtime.readers() as session:
        in_order = select(Alert.id).where(open_alerts(now)).order_by(Alert.issued_at, Alert.id)
        alerts = [
            gather_alert(session, alert_id, as_at=now, zone=runtime.settings.zone)
            for alert_id in session.scalars(in_order)
        ]
    return Gathered(alerts, [alert_chart(a, width_px=CHART_WIDTH_PX) for a in alerts])


def send_digests(runtime: Runtime, payload: dict[str, Any]) -> datetime | None:
    """The job: every queued digest of the batch.  One that fails leaves
    the others composed, and the job raises so that it runs again."""
    batch = str(payload["batch"])
    with runtime.readers() as session:
        ids = list(
            session.scalars(
                select(Digest.id)
                .where(Digest.batch == batch, Digest.state == DigestState.QUEUED)
                .order_by(Digest.id)
            )
        )
    if not ids:
        return None
    now = runtime.clock()
    gathered = gather_open_alerts(runtime, now)
    failed = 0
    for digest_id in ids:
        try:
            compose_one(runtime, digest_id, now, gathered)
        except Exception:
            log.exception("could not compose digest %s; the job runs again", digest_id)
            failed += 1
    if failed:
        raise RuntimeError(f"{failed} digest(s) of batch {batch} could not be composed")
    return None


def _claim(session: Session, digest_id: int, now: datetime) -> bool:
    """Take the row from queued, unless another worker has.  It is left
    ``skipped`` until what it becomes is known, in this transaction."""
    result = session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.state == DigestState.QUEUED)
        .values(state=DigestState.SKIPPED, composed_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Prepared:
    """A digest composed, ready to queue once its row is claimed: the
    rendering (templates, MIME, the charts' bytes) is done before the
    write transaction, which only claims, checks and inserts."""

    user_id: int
    state: DigestState
    number: int
    previous_number: int | None
    kind: str
    raw: bytes
    snapshot: str


def compose_one(runtime: Runtime, digest_id: int, now: datetime, gathered: Gathered) -> None:
    """Decide one digest (skipped, no changes, or sent) and queue it."""
    with runtime.readers() as session:
        prepared = _prepare(session, runtime.settings, digest_id, now, gathered)
    with runtime.sessions.begin() as session:
        if not _claim(session, digest_id, now) or prepared is None:
            return
        if _number_of_previous(session, prepared.user_id) != prepared.previous_number:
            # Another digest of this auditor was numbered meanwhile (an
            # earlier period, late): this one is composed again next run.
            raise RuntimeError(f"digest {digest_id} was numbered after another; composed again")
        auditor = session.get_one(User, prepared.user_id)
        queue_email_to_person(
            session, runtime.settings, kind=prepared.kind, user=auditor, raw=prepared.raw, now=now
        )
        session.execute(
            update(Digest)
            .where(Digest.id == digest_id)
            .values(state=prepared.state, number=prepared.number, snapshot=prepared.snapshot)
            .execution_options(synchronize_session=False)
        )


def _prepare(
    session: Session, settings: Settings, digest_id: int, now: datetime, gathered: Gathered
) -> Prepared | None:
    """The digest's email, numbered after the auditor's previous one and
    saying what changed since it; None when nothing is to be sent."""
    row = session.get(Digest, digest_id)
    if row is None or row.state is not DigestState.QUEUED or not gathered.alerts:
        return None
    auditor = session.get_one(User, row.user_id)
    if not _still_wanted(session, row, auditor):
        return None
    previous = _previous(session, auditor.id)
    numbering = DigestNumbering(
        number=(previous.number if previous and previous.number else 0) + 1,
        day=long_day(now, settings),
        previous_number=previous.number if previous else None,
    )
    snapshot = digest_changes.snapshot_of(d.figures for d in gathered.alerts)
    before = digest_changes.loads(previous.snapshot) if previous else None
    changed = digest_changes.changes(before, snapshot) if before is not None else []
    if before is not None and not changed:
        state, kind = DigestState.NO_CHANGES, NO_CHANGES_KIND
        raw = no_changes_message(
            settings,
            auditor=auditor,
            open_alerts=len(gathered.alerts),
            numbering=numbering,
            now=now,
        )
    else:
        state, kind = DigestState.SENT, DIGEST_KIND
        raw = digest_message(
            settings,
            auditor=auditor,
            alerts=gathered.alerts,
            charts=gathered.charts,
            changed=changed,
            numbering=numbering,
            now=now,
        )
    return Prepared(
        auditor.id,
        state,
        numbering.number,
        numbering.previous_number,
        kind,
        raw,
        digest_changes.dumps(snapshot),
    )


def _still_wanted(session: Session, row: Digest, auditor: User) -> bool:
    """Still an active auditor wanting digests, and no later period of
    theirs has been queued since."""
    if not auditor.active or auditor.national_role != NationalRole.AUDITOR:
        return False
    if auditor.digest is DigestSchedule.OFF or auditor.digest is not row.schedule:
        # Off, or changed since the row was queued: the new schedule's
        # own period sends the next one.
        return False
    later = session.scalar(
        select(Digest.id)
        .where(Digest.user_id == row.user_id, Digest.period_at > row.period_at)
        .limit(1)
    )
    return later is None


def _number_of_previous(session: Session, user_id: int) -> int | None:
    return session.scalar(
        select(func.max(Digest.number)).where(Digest.user_id == user_id, Digest.number.is_not(None))
    )


def _previous(session: Session, user_id: int) -> Digest | None:
    """The auditor's latest digest that was sent (full or "no changes")."""
    latest = (
        select(func.max(Digest.number))
        .where(Digest.user_id == user_id, Digest.number.is_not(None))
        .scalar_subquery()
    )
    return session.scalar(select(Digest).where(Digest.user_id == user_id, Digest.number == latest))

"""Chasing as a test drives it: the alert CC-4720 issued at a fixed time,
a runtime whose clock the test sets, the scheduler's chasing pass run as
at a chosen moment, and the real queue worker run until every job is
done, so that what the pass decided reaches the relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import Delivery, Job, JobState, OutgoingEmail, User
from mailflow.core.runtime import Runtime
from mailflow.workers.periodic import TASKS, run_pass
from mailflow.workers.queue import QueueWorker
from tests.support.mail import parsed
from tests.support.relay import CapturingRelay
from tests.support.seed import alert_spec_data, seed_people
from tests.support.waiting import wait_until

# A Tuesday, 15:00 in London (GMT): the deadline is Thursday 15:00.
ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
DEADLINE = ISSUED + timedelta(hours=48)
CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Chasing:
    runtime: Runtime
    clock: Clock
    session: Session
    relay: CapturingRelay | None
    alert_id: int = 0

    def issue(self) -> int:
        """The people, and the alert to RXA, RXB and RXC issued at ISSUED."""
        seed_people(self.session)
        spec = parse_alert_spec(alert_spec_data(), source="test")
        issued = issue_alert(
            self.session, spec, now=ISSUED, actor="test", mail_domain="alerts.test"
        )
        self.session.commit()
        self.alert_id = issued.alert.id
        return self.alert_id

    def chase(self, at: datetime) -> list[str]:
        """One chasing pass as at ``at`` (the runtime's clock is set to it)."""
        self.clock.now = at
        return run_pass(self.runtime, at, CHASING)

    def work(self, timeout: float = 30.0) -> None:
        """Run the real worker until no job is pending."""
        worker = QueueWorker(self.runtime, poll_seconds=0.05)
        worker.start()
        try:
            wait_until(lambda: self.pending_jobs() == 0, timeout=timeout, what="jobs to finish")
        finally:
            worker.stop()

    def chase_and_send(self, at: datetime) -> list[tuple[str, EmailMessage]]:
        """A pass at ``at``, the worker run; the emails the relay got for it."""
        before = len(self.relay.received) if self.relay else 0
        self.chase(at)
        self.work()
        assert self.relay is not None
        return [(r.recipients[0], r.message) for r in self.relay.received[before:]]

    def pending_jobs(self) -> int:
        with self.runtime.sessions() as session:
            return int(
                session.scalar(select(func.count()).where(Job.state == JobState.PENDING)) or 0
            )

    def answer(self, email: str, code: str, at: datetime, status: str = "complete") -> None:
        """A confirmed answer, recorded as the web page does at ``at``."""
        with self.runtime.sessions.begin() as session:
            user = session.scalars(select(User).where(User.email == email)).one()
            record_answers(
                session,
                self.runtime.settings,
                user_id=user.id,
                alert_id=self.alert_id,
                answers=[AnswerValue(code, AnswerStatus(status))],
                via="link",
                now=at,
            )

    def delivery(self, email: str) -> Delivery:
        self.session.rollback()
        return self.session.scalars(select(Delivery).join(User).where(User.email == email)).one()

    def outbox(self, kind: str) -> list[tuple[str, EmailMessage]]:
        """The emails of this outbox kind, as queued (recipient, message)."""
        self.session.rollback()
        rows = self.session.execute(
            select(OutgoingEmail.recipient, OutgoingEmail.raw)
            .where(OutgoingEmail.kind == kind)
            .order_by(OutgoingEmail.id)
        )
        return [(recipient, parsed(raw)) for recipient, raw in rows]


@pytest.fixture
def chasing(settings: Settings, session: Session, relay: CapturingRelay) -> Iterator[Chasing]:
    clock = Clock(ISSUED)
    runtime = Runtime(settings, clock=clock)
    try:
        yield Chasing(runtime, clock, session, relay)
    finally:
        runtime.close()

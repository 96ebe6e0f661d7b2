"""Digests as a test drives them: the hand-built alert of
tests/support/reporting.py (CC-4720) and a second, smaller one (CC-4730)
whose every number is known too, two auditors on the daily schedule and
one on the weekly, the scheduler's digests task run as at a chosen time,
and the real worker run until every job is done, so that what the pass
decided reaches the relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import Alert, Delivery, DeliveryState, DigestSchedule, User
from mailflow.core.runtime import Runtime
from mailflow.people.users import add_user
from mailflow.workers.periodic import TASKS, run_pass
from tests.support.chasing import Chasing, Clock
from tests.support.relay import CapturingRelay
from tests.support.reporting import ISSUED, build, hours
from tests.support.seed import alert_spec_data

DIGESTS = tuple((name, task) for name, task in TASKS if name == "digests")
CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")
OLA = "ola@oversight.example"  # the seed's auditor, daily
UMA = "uma@oversight.example"  # daily
WES = "wes@oversight.example"  # weekly
# The second alert: critical, issued a day after the first (Wednesday
# 2 December, 15:00 GMT), its deadline 20 hours on (Thursday 11:00).
SECOND_ISSUED = ISSUED + timedelta(hours=24)
SECOND_DEADLINE = SECOND_ISSUED + timedelta(hours=20)
SECOND_TITLE = "Default password in Example Router"
SECOND_ANSWERS = (
    # Hours after its issue; its deadline is at 20.
    ("raj@riverside.example", AnswerValue("RXA", AnswerStatus.COMPLETE), 1),
    (
        "bea@brookfield.example",
        AnswerValue(
            "RXB",
            AnswerStatus.UNABLE,
            reason="Legacy system cannot be patched",
            mitigations="Isolated on its own network",
        ),
        3,
    ),
    ("dee@dunmore.example", AnswerValue("RXD", AnswerStatus.IN_PROGRESS), 30),
)
# Friday 4 December, 08:00 GMT: the daily digest's time.
FRIDAY_8 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def issue_second_alert(session: Session, settings: Settings) -> int:
    """CC-4730 to RXA, RXB, RXC and RXD; RXA complete after 1 hour, RXB
    unable after 3, RXD in progress after 30 (after the deadline), RXC
    silent."""
    spec = parse_alert_spec(
        alert_spec_data(
            reference="CC-4730",
            title=SECOND_TITLE,
            severity="critical",
            deadline_hours=20,
            audience={"organisations": ["RXA", "RXB", "RXC", "RXD"]},
        ),
        source="test",
    )
    alert_id = issue_alert(
        session, spec, now=SECOND_ISSUED, actor="test", mail_domain="alerts.test"
    ).alert.id
    session.execute(
        update(Delivery).where(Delivery.alert_id == alert_id).values(state=DeliveryState.SENT)
    )
    for email, answer, after in SECOND_ANSWERS:
        user_id = session.scalars(select(User.id).where(User.email == email)).one()
        record_answers(
            session,
            settings,
            user_id=user_id,
            alert_id=alert_id,
            answers=[answer],
            via="link",
            now=SECOND_ISSUED + timedelta(hours=after),
        )
    session.commit()
    return alert_id


def add_auditors(session: Session) -> None:
    for email, name, schedule in (
        (UMA, "Uma Shah", DigestSchedule.DAILY),
        (WES, "Wes Grant", DigestSchedule.WEEKLY),
    ):
        add_user(
            session,
            email=email,
            name=name,
            role="auditor",
            org_code=None,
            now=ISSUED - timedelta(days=30),
            actor="test",
            digest=schedule,
        )
    session.commit()


@dataclass
class Digests(Chasing):
    first_alert: int = 0
    second_alert: int = 0
    seen: int = field(default=0)

    def build(self, *, second: bool = True) -> None:
        """The first alert, reminded once at 24 hours before its deadline
        (RXG, RXH and RXJ had not answered), the second alert, and the
        auditors."""
        settings = self.runtime.settings
        self.first_alert = self.alert_id = build(self.session, settings)
        self.chase(hours(25))
        add_auditors(self.session)
        if second:
            self.second_alert = issue_second_alert(self.session, settings)

    def digest_pass(self, at: datetime) -> list[str]:
        self.clock.now = at
        return run_pass(self.runtime, at, DIGESTS)

    def send(self, at: datetime, *, composed_at: datetime | None = None) -> dict[str, EmailMessage]:
        """A digests pass at ``at``, the worker run at ``composed_at``
        (by default the same time); the digests the relay got for it, by
        recipient (each recipient at most once, or the test fails)."""
        lines = self.digest_pass(at)
        self.clock.now = composed_at or at
        self.work()
        got = self.new_digests()
        assert len(got) == len(dict(got)), (lines, got)
        return dict(got)

    def new_digests(self) -> list[tuple[str, EmailMessage]]:
        """The digest emails the relay took since the last look."""
        assert self.relay is not None
        received = self.relay.received[self.seen :]
        self.seen = len(self.relay.received)
        return [
            (r.recipients[0], r.message)
            for r in received
            if str(r.message["Subject"]).startswith("Digest ")
        ]

    def close(self, alert_id: int, at: datetime) -> None:
        with self.runtime.sessions.begin() as session:
            session.get_one(Alert, alert_id).closed_at = at


@pytest.fixture
def digests(settings: Settings, session: Session, relay: CapturingRelay) -> Iterator[Digests]:
    clock = Clock(ISSUED)
    runtime = Runtime(settings, clock=clock)
    try:
        yield Digests(runtime, clock, session, relay)
    finally:
        runtime.close()

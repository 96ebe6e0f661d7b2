"""An alert issued at a fixed time, the scheduler's chasing run at chosen
times, and answers recorded at chosen times: for tests of what happens to
an alert over its life (closing, updates, overdue)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import ChaserEmail, User
from mailflow.core.runtime import Runtime
from mailflow.workers.periodic import TASKS, run_pass
from tests.support.cli import SECRET_KEY
from tests.support.seed import alert_spec_data, seed_people

# A Tuesday, 15:00 in London (GMT): the deadline is Thursday 15:00.
ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
DEADLINE = ISSUED + timedelta(hours=48)
CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")


def issue_at(session: Session, when: datetime) -> int:
    """The people of tests/support/seed.py and CC-4720 to RXA, RXB and RXC,
    issued ``when``; committed."""
    seed_people(session)
    spec = parse_alert_spec(alert_spec_data(), source="test")
    issued = issue_alert(session, spec, now=when, actor="test", mail_domain="alerts.test")
    session.commit()
    return issued.alert.id


def chase(runtime: Runtime, at: datetime) -> list[str]:
    """One chasing pass of the scheduler as at ``at``: what it did."""
    return run_pass(runtime, at, CHASING)


def answer(
    session: Session,
    alert_id: int,
    email: str,
    code: str,
    at: datetime,
    status: AnswerStatus = AnswerStatus.COMPLETE,
) -> None:
    user = session.scalars(select(User).where(User.email == email)).one()
    record_answers(
        session,
        # Only its chasing defaults are read (when the next update is due).
        Settings(database_url="sqlite://", secret_key=SECRET_KEY),
        user_id=user.id,
        alert_id=alert_id,
        answers=[AnswerValue(code, status)],
        via="link",
        now=at,
    )
    session.commit()


def chaser_emails(session: Session) -> Counter[tuple[str, str, str]]:
    """(kind, step, person) of every chaser email decided on."""
    session.rollback()  # a fresh look at what other transactions wrote
    rows = session.execute(
        select(ChaserEmail.kind, ChaserEmail.step, User.email).join(
            User, User.id == ChaserEmail.user_id
        )
    )
    return Counter((kind.value, step, email) for kind, step, email in rows)

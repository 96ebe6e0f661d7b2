"""A hand-built alert for the auditors' reports, with every number known:
nine organisations in scope (one more closed on the day of issue), six
answered at known hours (five within the deadline), one whose every email
bounced (unreachable), two silent; an update and a review that fall due on
known days.  The figures each report must show are in
tests/test_reporting_an_alert.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import Delivery, DeliveryState, Organisation, User
from mailflow.people.users import add_user
from tests.support.seed import NOW, alert_spec_data, seed_people

LONDON = ZoneInfo("Europe/London")
# A Tuesday, 15:00 in London (GMT): the deadline is Thursday 15:00.
ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
DEADLINE = ISSUED + timedelta(hours=48)
LATER = ISSUED + timedelta(hours=80)
# Saturday 5 December, noon: RXB's update, due on the Friday, is overdue.
SATURDAY = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
EARLIER = ISSUED + timedelta(hours=24)
INJECTION = "=cmd|' /C calc'!A0"
# Organisations added to the seed's four, each with one responder but
# RXH, which has two.
MORE = {
    "RXE": ["eve@elmfield.example"],
    "RXF": ["fay@fenwick.example"],
    "RXG": ["gus@glenside.example"],
    "RXH": ["hal@highmoor.example", "hana@highmoor.example"],
    "RXJ": ["jo@juniper.example"],
    "RXK": ["kit@kestrel.example"],
}


@dataclass(frozen=True)
class Given:
    email: str
    code: str
    hours: int
    value: AnswerValue


ANSWERS = [
    # Hours after the issue; the deadline is at 48.
    Given(
        "raj@riverside.example",
        "RXA",
        2,
        AnswerValue("RXA", AnswerStatus.COMPLETE, note=INJECTION),
    ),
    Given("bea@brookfield.example", "RXB", 4, AnswerValue("RXB", AnswerStatus.IN_PROGRESS)),
    Given(
        "li@itservices.example",
        "RXC",
        10,
        AnswerValue(
            "RXC", AnswerStatus.UNABLE, reason="Vendor has no fix", mitigations="Port closed"
        ),
    ),
    Given("eve@elmfield.example", "RXE", 20, AnswerValue("RXE", AnswerStatus.IN_PROGRESS)),
    Given("fay@fenwick.example", "RXF", 30, AnswerValue("RXF", AnswerStatus.COMPLETE)),
    Given(
        "dee@dunmore.example",
        "RXD",
        60,
        AnswerValue("RXD", AnswerStatus.NOT_APPLICABLE, reason="No such gateway"),
    ),
    Given("eve@elmfield.example", "RXE", 70, AnswerValue("RXE", AnswerStatus.COMPLETE)),
]


def build(session: Session, settings: Settings) -> int:
    seed_people(session)
    for code, emails in MORE.items():
        session.add(
            Organisation(
                code=code, name=f"Trust {code}", type="trust", created_at=NOW, updated_at=NOW
            )
        )
        session.flush()
        for email in emails:
            add_user(
                session,
                email=email,
                name=email.split("@")[0].title(),
                role="responder",
                org_code=code,
                now=NOW,
                actor="test",
            )
    spec = parse_alert_spec(
        alert_spec_data(audience={"organisations": ["RXA", "RXB", "RXC", "RXD", *MORE]}),
        source="test",
    )
    alert_id = issue_alert(
        session, spec, now=ISSUED, actor="test", mail_domain="alerts.test"
    ).alert.id
    # RXE and RXJ come under RXA; RXJ is a practice, not a trust.
    session.execute(
        update(Organisation)
        .where(Organisation.code.in_(["RXE", "RXJ"]))
        .values(
            parent_id=select(Organisation.id).where(Organisation.code == "RXA").scalar_subquery()
        )
    )
    session.execute(update(Organisation).where(Organisation.code == "RXJ").values(type="practice"))
    # RXK closes on the day of issue: no longer in scope.
    session.execute(
        update(Organisation).where(Organisation.code == "RXK").values(closed_on=date(2026, 12, 1))
    )
    # Every email for RXG bounced; one of RXH's two did.
    bounced = select(User.id).where(
        User.email.in_(["gus@glenside.example", "hal@highmoor.example"])
    )
    session.execute(
        update(Delivery).where(Delivery.user_id.in_(bounced)).values(state=DeliveryState.BOUNCED)
    )
    session.execute(
        update(Delivery)
        .where(Delivery.state != DeliveryState.BOUNCED)
        .values(state=DeliveryState.SENT)
    )
    for given in ANSWERS:
        user_id = session.scalars(select(User.id).where(User.email == given.email)).one()
        record_answers(
            session,
            settings,
            user_id=user_id,
            alert_id=alert_id,
            answers=[given.value],
            via="link",
            now=ISSUED + timedelta(hours=given.hours),
        )
    session.commit()
    return alert_id


def hours(n: int) -> datetime:
    return ISSUED + timedelta(hours=n)

"""Small data sets for tests, built through the domain's own functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import IssuedAlert, issue_alert
from mailflow.core.models import Delivery, Membership, Organisation, Role, User
from mailflow.people.organisation_files import parse_organisations
from mailflow.people.organisations import import_organisations
from mailflow.people.users import add_user

# Just before the test run: records made "now" are due at once for the
# worker, which reads the real clock.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

ORGS_CSV = """code,name,type
RXA,Riverside Acute NHS Trust,trust
RXB,Brookfield Community NHS Trust,trust
RXC,Castleton Mental Health NHS Foundation Trust,trust
RXD,Dunmore NHS Trust,trust
"""

# (email, name, role, organisation)
PEOPLE = [
    ("ann@riverside.example", "Ann Lee", "administrator", "RXA"),
    ("raj@riverside.example", "Raj Patel", "responder", "RXA"),
    ("bea@brookfield.example", "Bea Clarke", "responder", "RXB"),
    ("sam@castleton.example", "Sam Okafor", "responder", "RXC"),
    ("tom@castleton.example", "Tom Wren", "alert-only", "RXC"),
    ("li@itservices.example", "Li Chen", "responder", "RXB"),
    ("li@itservices.example", "Li Chen", "responder", "RXC"),
    ("dee@dunmore.example", "Dee Ross", "responder", "RXD"),
    ("ola@oversight.example", "Ola Nwosu", "auditor", None),
]

# Who should get the alert for RXA, RXB, RXC: everyone above except the
# RXD responder and the auditor, and Li Chen only once.
AUDIENCE_RECIPIENTS = {
    "ann@riverside.example",
    "raj@riverside.example",
    "bea@brookfield.example",
    "sam@castleton.example",
    "tom@castleton.example",
    "li@itservices.example",
}


def alert_spec_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reference": "CC-4720",
        "title": "Remote code execution in Example VPN Gateway",
        "severity": "high",
        "summary": "A flaw in the web interface lets an attacker run code.",
        "affected": ["Example VPN Gateway 9.0 to 9.4"],
        "cves": ["CVE-2026-41234"],
        "remediation": "Upgrade to 9.4.2.",
        "references": ["https://example.org/advisories/vpn"],
        "audience": {"organisations": ["RXA", "RXB", "RXC"]},
    }
    data.update(overrides)
    return data


def seed_people(session: Session) -> None:
    records = parse_organisations(ORGS_CSV, source="orgs.csv")
    import_organisations(session, records, now=NOW, actor="test", source="orgs.csv")
    for email, name, role, org in PEOPLE:
        add_user(session, email=email, name=name, role=role, org_code=org, now=NOW, actor="test")


def issue(session: Session, **overrides: Any) -> IssuedAlert:
    spec = parse_alert_spec(alert_spec_data(**overrides), source="test")
    return issue_alert(session, spec, now=NOW, actor="test", mail_domain="alerts.test")


@dataclass(frozen=True)
class Crowd:
    org_codes: list[str]
    emails: list[str]


def seed_crowd(session: Session, *, organisations: int, per_organisation: int) -> Crowd:
    """Many organisations and responders, inserted in bulk."""
    codes = [f"Z{n:05d}" for n in range(organisations)]
    session.execute(
        insert(Organisation),
        [
            {
                "code": c,
                "name": f"Organisation {c}",
                "type": "trust",
                "created_at": NOW,
                "updated_at": NOW,
            }
            for c in codes
        ],
    )
    emails = [
        f"person{o}.{p}@crowd.example"
        for o in range(organisations)
        for p in range(per_organisation)
    ]
    session.execute(
        insert(User),
        [
            {"email": e, "name": f"Person {e.split('@')[0]}", "active": True, "created_at": NOW}
            for e in emails
        ],
    )
    org_ids = dict(session.query(Organisation.code, Organisation.id).all())  # noqa: RUF100
    user_ids = dict(session.query(User.email, User.id).all())
    session.execute(
        insert(Membership),
        [
            {
                "user_id": user_ids[f"person{o}.{p}@crowd.example"],
                "organisation_id": org_ids[codes[o]],
                "role": Role.RESPONDER,
                "created_at": NOW,
            }
            for o in range(organisations)
            for p in range(per_organisation)
        ],
    )
    return Crowd(codes, emails)


def delivery_with_keys(
    session: Session, *, reply_key: str, bounce_key: str, created_at: datetime = NOW
) -> Delivery:
    """People, an alert, and Ann's delivery of it given the reply and bounce
    keys named (made ``created_at``): mail to reply+KEY or bounce+KEY is
    taken only for a key a recent delivery holds.  The caller commits."""
    seed_people(session)
    issue(session)
    delivery = session.scalars(
        select(Delivery).join(User).where(User.email == "ann@riverside.example")
    ).one()
    delivery.reply_key = reply_key
    delivery.bounce_key = bounce_key
    delivery.created_at = created_at
    return delivery

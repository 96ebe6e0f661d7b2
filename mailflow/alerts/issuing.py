"""Issuing an alert: who it goes to, and the deliveries that carry it."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.errors import InvalidInput, NotFound
from mailflow.core.jobs import add_job
from mailflow.core.mail.addresses import new_key
from mailflow.core.models import (
    Alert,
    AlertAudience,
    Delivery,
    DeliveryState,
    Membership,
    Organisation,
    Severity,
    User,
)

REFERENCE_PREFIX = "CC-"
DELIVER_ALERT = "deliver_alert"
REFERENCE_PATTERN = r"^[A-Z]{2,6}-[0-9]{1,6}$"
CVE_PATTERN = re.compile(r"^CVE-\d{4}-\d{4,}$")
MAX_DEADLINE_HOURS = 24 * 30
# A large audience's emails are sent by several jobs at once, which
# several workers (on several machines) can run: each claims its own
# deliveries, so they share the fan-out.  One job per this many emails,
# up to MAX_SENDERS.
EMAILS_PER_SENDER = 2_500
MAX_SENDERS = 4

# An alert as its publisher writes it is checked here, in the domain, so
# that every way in (a TOML or JSON file today) checks it the same way.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def checked_cves(values: list[str]) -> list[str]:
    """CVE identifiers as written in an alert or an update, upper case."""
    cleaned = [v.strip().upper() for v in values]
    for value in cleaned:
        if not CVE_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a CVE identifier like CVE-2026-12345")
    return cleaned


class AudienceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisations: list[Text] = Field(default_factory=list)
    types: list[Text] = Field(default_factory=list)


class AlertSpec(BaseModel):
    """What a publisher writes to issue an alert."""

    model_config = ConfigDict(extra="forbid")

    reference: (
        Annotated[str, StringConstraints(strip_whitespace=True, pattern=REFERENCE_PATTERN)] | None
    ) = None
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    severity: Severity
    summary: Text
    affected: list[Text] = Field(default_factory=list)
    cves: list[str] = Field(default_factory=list)
    remediation: Text
    references: list[str] = Field(default_factory=list)
    deadline_hours: int = Field(default=48, ge=1, le=MAX_DEADLINE_HOURS)
    audience: AudienceSpec = Field(default_factory=AudienceSpec)

    @field_validator("cves")
    @classmethod
    def _cves_look_like_cves(cls, values: list[str]) -> list[str]:
        return checked_cves(values)

    @field_validator("references")
    @classmethod
    def _references_are_web_links(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip() for v in values]
        for value in cleaned:
            if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
                raise ValueError(f"{value!r} is not an http(s) link")
        return cleaned


@dataclass(frozen=True)
class IssuedAlert:
    alert: Alert
    organisations: int
    recipients: int
    organisations_without_recipients: list[str]


def next_free_reference(session: Session) -> str:
    references = session.scalars(
        select(Alert.reference).where(Alert.reference.like(f"{REFERENCE_PREFIX}%"))
    )
    numbers = [int(m.group(1)) for r in references if (m := re.fullmatch(r"CC-(\d+)", r))]
    return f"{REFERENCE_PREFIX}{max(numbers, default=0) + 1:04d}"


def resolve_audience(session: Session, spec: AlertSpec) -> list[Organisation]:
    """The open organisations an alert goes to: those named, those of the
    named types, or (if neither is given) every open organisation."""
    wanted_codes = [c.upper() for c in spec.audience.organisations]
    orgs: dict[int, Organisation] = {}
    if wanted_codes:
        found = {
            o.code: o
            for o in session.scalars(
                select(Organisation).where(Organisation.code.in_(wanted_codes))
            )
        }
        for code in wanted_codes:
            org = found.get(code)
            if org is None:
                raise InvalidInput(
                    "field audience.organisations", f"{code} is not a known organisation"
                )
            if not org.is_open:
                raise InvalidInput("field audience.organisations", f"{code} ({org.name}) is closed")
            orgs[org.id] = org
    if spec.audience.types:
        types = [t.lower() for t in spec.audience.types]
        known = set(session.scalars(select(Organisation.type).distinct()))
        for t in types:
            if t not in known:
                raise InvalidInput("field audience.types", f"no organisation has the type {t!r}")
        for org in session.scalars(
            select(Organisation).where(
                Organisation.type.in_(types), Organisation.closed_on.is_(None)
            )
        ):
            orgs[org.id] = org
    if not wanted_codes and not spec.audience.types:
        for org in session.scalars(select(Organisation).where(Organisation.closed_on.is_(None))):
            orgs[org.id] = org
    if not orgs:
        raise InvalidInput("field audience", "the audience has no open organisations")
    return sorted(orgs.values(), key=lambda o: o.code)


def issue_alert(
    session: Session,
    spec: AlertSpec,
    *,
    now: datetime,
    actor: str,
    mail_domain: str,
) -> IssuedAlert:
    """Record the alert, one delivery per recipient and the job that sends
    them, all in the caller's transaction."""
    reference = spec.reference or next_free_reference(session)
    if session.scalar(select(func.count()).where(Alert.reference == reference)):
        raise InvalidInput("field reference", f"{reference} has already been issued")

    audience = resolve_audience(session, spec)
    alert = Alert(
        reference=reference,
        title=spec.title,
        severity=spec.severity,
        summary=spec.summary,
        affected=spec.affected,
        cves=spec.cves,
        remediation=spec.remediation,
        references=spec.references,
        response_required=spec.severity.response_required,
        issued_at=now,
        deadline_at=now + timedelta(hours=spec.deadline_hours),
        issued_by=actor,
        audience_spec=spec.audience.model_dump(),
    )
    session.add(alert)
    session.flush()
    session.add_all(AlertAudience(alert_id=alert.id, organisation_id=o.id) for o in audience)

    audience_ids = [o.id for o in audience]
    recipients = session.execute(
        select(Membership.user_id, Membership.organisation_id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organisation_id.in_(audience_ids), User.active.is_(True))
    ).all()
    orgs_by_user: dict[int, list[int]] = defaultdict(list)
    for user_id, org_id in recipients:
        orgs_by_user[user_id].append(org_id)
    reached = {org_id for _, org_id in recipients}

    session.add_all(
        Delivery(
            alert_id=alert.id,
            user_id=user_id,
            state=DeliveryState.QUEUED,
            attempts=0,
            message_id=f"{reference.lower()}.{new_key()[:16]}@{mail_domain}",
            reply_key=new_key(),
            bounce_key=new_key(),
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for user_id in sorted(orgs_by_user)
    )
    for _ in range(senders_for(len(orgs_by_user))):
        add_job(session, DELIVER_ALERT, {"alert_id": alert.id}, now=now)
    unreached = [o.code for o in audience if o.id not in reached]
    record_event(
        session,
        at=now,
        actor=actor,
        action="alert.issued",
        subject=f"alert:{reference}",
        organisations=len(audience),
        recipients=len(orgs_by_user),
        severity=spec.severity.value,
        deadline=alert.deadline_at.isoformat(),
    )
    session.flush()
    return IssuedAlert(alert, len(audience), len(orgs_by_user), unreached)


def get_alert(session: Session, reference: str) -> Alert:
    alert = session.scalar(select(Alert).where(Alert.reference == reference.strip().upper()))
    if alert is None:
        raise NotFound(f"no alert {reference.strip().upper()}")
    return alert


def senders_for(emails: int) -> int:
    """How many jobs send an alert's ``emails`` emails."""
    return max(1, min(MAX_SENDERS, -(-emails // EMAILS_PER_SENDER)))

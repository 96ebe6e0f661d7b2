"""A request nobody decides: one reminder to the administrators after three
days, expiry after seven (its requester told), with the clock given to
`mailflow scheduler --once --at`.  A request for an organisation with no
active administrator goes to the service desk, who decides it with
`mailflow access approve|deny`."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access import expiry
from mailflow.config import Settings
from mailflow.core.models import AccessRequest, AccessState, AuditEvent, Membership, Role
from mailflow.core.runtime import Runtime
from mailflow.workers.periodic import run_pass
from tests.support.access_decisions import (
    ADA,
    ANN,
    BEA,
    LI,
    add_second_administrator,
    ask,
    emails_to,
    organisation,
    user,
)
from tests.support.cli import mailflow_with, one_error_line
from tests.support.mail import plain_text
from tests.support.relay import CapturingRelay
from tests.support.seed import NOW, seed_people

DEE = "dee@dunmore.example"


def people(session: Session) -> None:
    seed_people(session)
    session.commit()
    add_second_administrator(session)


def at(when: datetime) -> str:
    return when.isoformat()


def test_one_reminder_after_three_days_then_expiry_after_seven(
    session: Session, settings: Settings
) -> None:
    people(session)
    request = ask(session, settings, now=NOW)
    early = mailflow_with(settings, "scheduler", "--once", "--at", at(NOW + timedelta(days=2)))
    assert early.exit_code == 0 and "access request" not in early.output
    assert emails_to(session, ANN, "access_decide_reminder") == []

    later = NOW + timedelta(days=3, minutes=1)
    first = mailflow_with(settings, "scheduler", "--once", "--at", at(later))
    assert f"access request {request.id}: reminder sent" in first.output
    again = mailflow_with(settings, "scheduler", "--once", "--at", at(later))
    assert "reminder sent" not in again.output
    for admin in (ANN, ADA):
        [reminder] = emails_to(session, admin, "access_decide_reminder")
        assert str(reminder["Subject"]).startswith("Reminder: Access request")
        assert plain_text(reminder).startswith("Reminder: this request is still waiting")
        assert "/approve" in plain_text(reminder)
    session.rollback()
    assert session.get_one(AccessRequest, request.id).reminded_at is not None

    expired_at = NOW + timedelta(days=7, minutes=1)
    done = mailflow_with(settings, "scheduler", "--once", "--at", at(expired_at))
    assert f"access request {request.id} expired" in done.output
    assert (
        "expired"
        not in mailflow_with(settings, "scheduler", "--once", "--at", at(expired_at)).output
    )
    session.rollback()
    assert session.get_one(AccessRequest, request.id).state is AccessState.EXPIRED
    [told] = emails_to(session, LI, "access_expired")
    assert "has expired" in str(told["Subject"]) and "Nothing has changed" in plain_text(told)
    # How to ask again, with the address to write to.
    assert f"REQUEST RXA: REASON to access@{settings.mail_domain}" in plain_text(told)
    # An expired request is decided by no one.
    late = mailflow_with(settings, "access", "approve", str(request.id))
    assert late.exit_code == 1 and "already expired" in one_error_line(late)


def test_two_passes_at_once_remind_once(session: Session, settings: Settings) -> None:
    people(session)
    request = ask(session, settings, now=NOW)
    runtime = Runtime(settings)
    try:
        later = NOW + timedelta(days=3, minutes=1)
        results: list[list[str]] = []
        threads = [
            threading.Thread(target=lambda: results.append(run_pass(runtime, later)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        runtime.close()
    lines = [line for result in results for line in result]
    assert lines == [f"access requests: access request {request.id}: reminder sent"]
    assert len(emails_to(session, ANN, "access_decide_reminder")) == 1


def test_a_request_with_no_administrator_goes_to_the_service_desk_who_decides_it(
    session: Session, settings: Settings, relay: CapturingRelay
) -> None:
    people(session)
    # Brookfield (RXB) has no administrator.
    request = ask(session, settings, requester=DEE, org_code="RXB")
    session.rollback()
    assert session.get_one(AccessRequest, request.id).to_service_desk
    [desk] = emails_to(session, settings.service_desk, "access_decide")
    text = plain_text(desk)
    assert "Dee Ross (dee@dunmore.example) asks to answer" in text
    assert f"mailflow access approve {request.id}" in text
    assert desk["Reply-To"] is None
    # An address, not a person of ours: no personal link in its footer.
    assert "/access/new/" not in text
    assert desk["Auto-Submitted"] == "auto-generated"

    unknown = mailflow_with(settings, "access", "approve", "9999")
    assert unknown.exit_code == 1 and "no access request 9999" in one_error_line(unknown)

    approved = mailflow_with(settings, "access", "approve", str(request.id), "--reason", "ok")
    assert approved.exit_code == 0, approved.output
    assert f"access request {request.id} approved" in approved.output
    session.rollback()
    decided = session.get_one(AccessRequest, request.id)
    assert decided.decided_by_operator is not None and decided.decided_by_operator.startswith("cli")
    membership = session.scalars(
        select(Membership).where(
            Membership.user_id == user(session, DEE).id,
            Membership.organisation_id == organisation(session, "RXB").id,
        )
    ).one()
    assert membership.role is Role.RESPONDER and membership.access_request_id == request.id
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "access.approved")).one()
    assert event.actor.startswith("cli")
    [told] = emails_to(session, DEE, "access_decided")
    assert "approved by the service desk" in plain_text(told)

    again = mailflow_with(settings, "access", "deny", str(request.id))
    assert again.exit_code == 1
    assert "already approved by the service desk" in one_error_line(again)


def test_the_service_desk_denies_with_a_reason(session: Session, settings: Settings) -> None:
    people(session)
    request = ask(session, settings, requester=DEE, org_code="RXB")
    denied = mailflow_with(
        settings, "access", "deny", str(request.id), "--reason", "ask your own trust"
    )
    assert denied.exit_code == 0, denied.output
    [told] = emails_to(session, DEE, "access_decided")
    assert "Reason: ask your own trust" in plain_text(told)


def test_a_request_whose_email_fails_is_left_for_the_next_pass_and_the_others_go_on(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    people(session)
    first = ask(session, settings, now=NOW)
    second = ask(session, settings, requester=BEA, now=NOW)
    told = expiry.tell_expired

    def fails_for_the_first(session: Session, settings: Settings, **kwargs: Any) -> None:
        if kwargs["request"].id == first.id:
            raise RuntimeError("the template would not render")
        told(session, settings, **kwargs)

    monkeypatch.setattr(expiry, "tell_expired", fails_for_the_first)
    later = NOW + timedelta(days=7, minutes=1)
    runtime = Runtime(settings)
    try:
        done = run_pass(runtime, later)
        monkeypatch.setattr(expiry, "tell_expired", told)
        then = run_pass(runtime, later)
    finally:
        runtime.close()

    assert done == [f"access requests: access request {second.id} expired; requester told"]
    assert then == [f"access requests: access request {first.id} expired; requester told"]
    session.rollback()
    states = session.scalars(select(AccessRequest.state).order_by(AccessRequest.id)).all()
    assert states == [AccessState.EXPIRED, AccessState.EXPIRED]

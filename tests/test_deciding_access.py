"""Riverside's administrators decide Li Chen's request to answer for RXA:
every administrator gets one email with Approve and Deny links and a reply
form; a link shows what will happen and decides only with a code; the
first decision wins and both sides are told; an approval makes Li a
responder whose next RXA alert carries RXA's links."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access.deciding import AlreadyDecided, Decider
from mailflow.access.decision_links import Verb, decision_link
from mailflow.access.decision_outcome import commit_decision
from mailflow.core.errors import NotAllowed
from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import (
    AccessDecisionKey,
    AccessRequest,
    AccessState,
    AuditEvent,
    Membership,
    OutgoingEmail,
    OutgoingState,
    Role,
)
from mailflow.core.runtime import utc_now
from mailflow.people.users import remove_user
from tests.support.access_decisions import (
    ADA,
    ANN,
    BEA,
    LI,
    RAJ,
    REASON,
    add_second_administrator,
    ask,
    decide_path,
    decision_emails,
    emails_to,
    links_in,
    organisation,
    path_of,
    sending,
    user,
)
from tests.support.mail import plain_text
from tests.support.pages import Web, csrf_of, enrol, row_counts
from tests.support.relay import CapturingRelay
from tests.support.seed import issue
from tests.support.waiting import wait_until


@pytest.fixture
def deciding(web: Web, relay: CapturingRelay) -> Iterator[Web]:
    """The web app with a second RXA administrator, both of them with an
    authenticator app, and the queue worker sending to the relay (the
    seeded alert's six emails sent first)."""
    add_second_administrator(web.session)
    for email in (ANN, ADA):
        web.secrets[email] = enrol(web.session, web.settings, email)
    with sending(web.runtime):
        relay.wait_for(6)
        yield web


def decision_counts(web: Web) -> dict[str, object]:
    """What a decision changes: every table but the worker's own (jobs,
    and the audit of emails it sends), and the requests' states."""
    counts: dict[str, object] = dict(row_counts(web.engine))
    del counts["jobs"], counts["audit_events"]
    session = web.db()
    counts["states"] = sorted((r.id, r.state.value) for r in session.scalars(select(AccessRequest)))
    counts["decisions"] = session.scalars(
        select(AuditEvent.id).where(AuditEvent.action.like("access.%"))
    ).all()
    return counts


def all_sent(session: Session) -> bool:
    session.rollback()
    queued = session.scalars(
        select(OutgoingEmail.id).where(OutgoingEmail.state == OutgoingState.QUEUED)
    ).all()
    return not queued


def approve_as(web: Web, email: str, path: str, reason: str = "") -> Any:
    client = web.fresh_client()
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(
        path,
        data={"csrf_token": csrf_of(page.text), "reason": reason, "code": web.code(email)},
    )


def access_requests_received(relay: CapturingRelay) -> list[Any]:
    return [r for r in relay.received if "Access request:" in str(r.message["Subject"])]


def membership(session: Session, email: str, code: str) -> Membership | None:
    session.rollback()
    return session.scalars(
        select(Membership).where(
            Membership.user_id == user(session, email).id,
            Membership.organisation_id == organisation(session, code).id,
        )
    ).one_or_none()


def state_of(session: Session, request_id: int) -> AccessState:
    session.rollback()
    return session.get_one(AccessRequest, request_id).state


def test_every_administrator_gets_one_email_with_both_links_the_form_and_a_reply_key(
    deciding: Web, relay: CapturingRelay
) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    emails = decision_emails(session)
    assert sorted(emails) == [ADA, ANN]
    wait_until(lambda: len(access_requests_received(relay)) >= 2, timeout=20, what="two emails")
    received = access_requests_received(relay)
    assert sorted(r.recipients[0] for r in received) == [ADA, ANN]
    for got in received:
        message = got.message
        text = plain_text(message).replace("\r\n", "\n")
        assert "Li Chen (li@itservices.example) asks to answer" in text
        assert "Riverside Acute NHS Trust (RXA)" in text
        assert "Brookfield Community NHS Trust (RXB)" in text  # where Li answers today
        assert REASON in text and "expires on" in text
        assert "  APPROVE\n" in text and "  DENY: REASON\n" in text
        [approve] = links_in(message, web.settings.base_url, "/access/")[:1]
        assert approve.endswith("/approve")
        assert any(
            link.endswith("/deny") for link in links_in(message, web.settings.base_url, "/access/")
        )
        reply_to = str(message["Reply-To"])
        key = reply_to.split("+", 1)[1].split("@", 1)[0]
        found = session.get_one(AccessDecisionKey, key)
        assert found.request_id == request.id
        assert found.user_id == user(session, got.recipients[0]).id
    assert not request.to_service_desk


def test_approving_by_link_with_a_code_grants_the_role_and_tells_both_sides(
    deciding: Web, relay: CapturingRelay
) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    [approve] = [
        link
        for link in links_in(decision_emails(session)[ANN], web.settings.base_url, "/access/")
        if link.endswith("/approve")
    ]
    path = path_of(approve, web.settings)

    before = decision_counts(web)
    page = web.fresh_client().get(path)
    assert page.status_code == 200
    assert "Approve access for Li Chen" in page.text and REASON in page.text
    assert decision_counts(web) == before  # GET changes nothing

    done = approve_as(web, ANN, path)
    assert done.status_code == 200, done.text
    assert "Request approved" in done.text
    assert state_of(session, request.id) is AccessState.APPROVED
    granted = membership(session, LI, "RXA")
    assert granted is not None and granted.role is Role.RESPONDER
    assert granted.granted_by_id == user(session, ANN).id
    assert granted.access_request_id == request.id
    actions = set(session.scalars(select(AuditEvent.action)))
    assert {"access.approved", "user.role_granted"} <= actions

    [told] = emails_to(session, LI, "access_decided")
    assert "was approved by Ann Lee" in plain_text(told)
    [others] = emails_to(session, ADA, "access_decided_others")
    assert "approved by Ann Lee" in plain_text(others)
    assert emails_to(session, ANN, "access_decided_others") == []

    # The open alert (CC-4720, unanswered by RXA) with RXA's status links.
    [open_alerts] = emails_to(session, LI, "access_open_alerts")
    assert "CC-4720" in plain_text(open_alerts)
    links = links_in(open_alerts, web.settings.base_url, "/r/")
    assert len(links) == 4
    payloads = [ANSWER_LINK.tokens(web.settings).verify(link.rsplit("/", 1)[1]) for link in links]
    assert {p["o"] for p in payloads} == {organisation(session, "RXA").id}
    answer_page = web.fresh_client().get(path_of(links[0], web.settings))
    assert answer_page.status_code == 200 and "Riverside Acute NHS Trust" in answer_page.text

    # The next alert to RXA reaches Li with RXA's links and form lines.
    wait_until(lambda: all_sent(session), timeout=20, what="the emails about the decision")
    session.rollback()
    with web.runtime.sessions.begin() as writer:
        issue(writer, reference="CC-4801", audience={"organisations": ["RXA"]})

    def alert_to_li() -> Any:
        return next(
            (
                r
                for r in relay.received
                if r.recipients == [LI] and "CC-4801" in str(r.message["Subject"])
            ),
            None,
        )

    wait_until(lambda: alert_to_li() is not None, timeout=20, what="the alert to Li")
    text = plain_text(alert_to_li().message)
    assert "RXA: complete" in text
    assert any(
        ANSWER_LINK.tokens(web.settings).verify(link.rsplit("/", 1)[1])["o"]
        == organisation(session, "RXA").id
        for link in links_in(alert_to_li().message, web.settings.base_url, "/r/")
    )


def test_denied_with_a_reason_the_requester_is_told_the_reason(deciding: Web) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    path = decide_path(web.settings, request.id, user(session, ADA).id, Verb.DENY)
    page = web.fresh_client().get(path)
    assert "Deny access for Li Chen" in page.text and 'name="reason"' in page.text
    done = approve_as(web, ADA, path, reason="we do not work with this supplier")
    assert "Request denied" in done.text
    assert state_of(session, request.id) is AccessState.DENIED
    assert membership(session, LI, "RXA") is None
    [told] = emails_to(session, LI, "access_decided")
    assert "was denied by Ada Brown" in plain_text(told)
    assert "Reason: we do not work with this supplier" in plain_text(told)
    assert emails_to(session, LI, "access_open_alerts") == []


def test_a_later_decision_is_told_who_decided_and_when_and_changes_nothing(
    deciding: Web,
) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    approve_as(web, ANN, decide_path(web.settings, request.id, user(session, ANN).id))
    deny = decide_path(web.settings, request.id, user(session, ADA).id, Verb.DENY)
    page = web.fresh_client().get(deny)
    assert page.status_code == 200
    assert "already approved by Ann Lee" in page.text and 'name="code"' not in page.text
    before = decision_counts(web)
    ada = Decider(user_id=user(session, ADA).id)
    with pytest.raises(AlreadyDecided) as raised, web.runtime.sessions.begin() as other:
        commit_decision(
            other, web.settings, request_id=request.id, decider=ada,
            approve=False, reason="", via="link", now=utc_now(),
        )  # fmt: skip
    assert "Ann Lee" in raised.value.decided_by
    assert decision_counts(web) == before
    assert state_of(session, request.id) is AccessState.APPROVED


def test_a_request_past_its_time_is_decided_by_no_one_even_before_it_is_marked_expired(
    deciding: Web,
) -> None:
    web, session = deciding, deciding.session
    asked = utc_now() - timedelta(days=web.settings.access_request_days, minutes=1)
    request = ask(web.runtime.sessions, web.settings, now=asked)
    # A link signed a day ago (a reminder's) is still within its own lifetime.
    path = path_of(
        decision_link(web.settings, request.id, user(session, ANN).id, Verb.APPROVE,
                      utc_now() - timedelta(days=1)),
        web.settings,
    )  # fmt: skip
    before = decision_counts(web)

    client = web.fresh_client()
    page = client.get(path)
    posted = client.post(path, data={"csrf_token": "x", "code": web.code(ANN)})

    assert page.status_code == 410 and "expired" in page.text
    assert posted.status_code in (403, 410)
    with pytest.raises(NotAllowed, match="expired"), web.runtime.sessions.begin() as other:
        commit_decision(
            other, web.settings, request_id=request.id, decider=Decider(operator="cli:desk"),
            approve=True, reason="", via="cli", now=utc_now(),
        )  # fmt: skip
    assert decision_counts(web) == before
    assert membership(session, LI, "RXA") is None


def test_an_organisation_closed_since_the_request_is_not_granted(deciding: Web) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    # Through the runtime's sessions: on SQLite they take turns with the worker's.
    with web.runtime.sessions.begin() as writer:
        organisation(writer, "RXA").closed_on = utc_now().date()

    with pytest.raises(NotAllowed, match="closed"), web.runtime.sessions.begin() as other:
        commit_decision(
            other, web.settings, request_id=request.id, decider=Decider(operator="cli:desk"),
            approve=True, reason="", via="cli", now=utc_now(),
        )  # fmt: skip

    assert state_of(session, request.id) is AccessState.OPEN
    assert membership(session, LI, "RXA") is None


def test_a_used_link_does_not_decide_twice(deciding: Web) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    path = decide_path(web.settings, request.id, user(session, ANN).id)
    client = web.fresh_client()
    page = client.get(path)
    csrf = csrf_of(page.text)
    first = client.post(path, data={"csrf_token": csrf, "code": web.code(ANN)})
    assert "Request approved" in first.text
    again = client.post(path, data={"csrf_token": csrf})
    assert again.status_code == 409 and "already approved" in again.text


def test_the_requester_cannot_approve_their_own_request(deciding: Web) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    li = user(session, LI)
    path = decide_path(web.settings, request.id, li.id)
    before = decision_counts(web)
    page = web.fresh_client().get(path)
    assert page.status_code == 403 and "cannot decide your own request" in page.text
    client = web.fresh_client()
    posted = client.post(path, data={"csrf_token": "x", "code": web.code(LI)})
    assert posted.status_code == 403
    with pytest.raises(NotAllowed), web.runtime.sessions.begin() as other:
        commit_decision(
            other, web.settings, request_id=request.id, decider=Decider(user_id=li.id),
            approve=True, reason="", via="link", now=utc_now(),
        )  # fmt: skip
    assert decision_counts(web) == before
    assert state_of(session, request.id) is AccessState.OPEN


@pytest.mark.parametrize("who", ["responder", "removed administrator"])
def test_a_person_who_is_not_an_administrator_there_is_refused(deciding: Web, who: str) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    if who == "responder":
        email = RAJ
    else:
        email = ADA
        with web.runtime.sessions.begin() as writer:
            remove_user(writer, email=ADA, org_code="RXA", now=utc_now(), actor="test")
    path = decide_path(web.settings, request.id, user(session, email).id)
    page = web.fresh_client().get(path)
    assert page.status_code == 403
    assert "not an administrator of this organisation" in page.text
    assert state_of(session, request.id) is AccessState.OPEN
    assert membership(session, LI, "RXA") is None


def test_a_decision_link_of_one_request_never_decides_another(deciding: Web) -> None:
    web, session = deciding, deciding.session
    first = ask(web.runtime.sessions, web.settings)
    second = ask(web.runtime.sessions, web.settings, requester=BEA)
    path = decide_path(web.settings, first.id, user(session, ANN).id)
    token = path.split("/")[2]
    # The token names its request; changing it breaks the signature.
    tampered = web.fresh_client().get(f"/access/{token[:-2]}xx/approve")
    assert tampered.status_code == 400
    approve_as(web, ANN, path)
    assert state_of(session, first.id) is AccessState.APPROVED
    assert state_of(session, second.id) is AccessState.OPEN
    assert membership(session, BEA, "RXA") is None


def test_two_administrators_racing_decide_exactly_once(deciding: Web) -> None:
    web, session = deciding, deciding.session
    request = ask(web.runtime.sessions, web.settings)
    deciders = [(user(session, ANN).id, True), (user(session, ADA).id, False)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(user_id: int, approve: bool) -> None:
        barrier.wait()
        try:
            with web.runtime.sessions.begin() as own:
                commit_decision(
                    own, web.settings, request_id=request.id, decider=Decider(user_id=user_id),
                    approve=approve, reason="", via="link", now=utc_now(),
                )  # fmt: skip
            outcomes.append("decided")
        except AlreadyDecided:
            outcomes.append("already decided")

    threads = [threading.Thread(target=decide, args=pair) for pair in deciders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["already decided", "decided"]
    session.rollback()
    decided = session.scalars(
        select(AuditEvent).where(AuditEvent.action.in_(["access.approved", "access.denied"]))
    ).all()
    assert len(decided) == 1
    assert len(emails_to(session, LI, "access_decided")) == 1

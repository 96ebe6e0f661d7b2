"""An administrator decides an access request by replying to its email
(real SMTP into the inbound server): APPROVE or DENY: reason comes back
as a "confirm your decision" link, decided only on the page with a code;
a reply that cannot be read, or that comes after another administrator
decided, gets an email saying why.  How the lines are read is tested at
the end."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from mailflow.access.decision_lines import ReplyNotUnderstood, parse_decision
from mailflow.access.decision_links import Verb
from mailflow.core.models import (
    AccessRequest,
    AccessState,
    Membership,
    OutgoingEmail,
    PendingAction,
)
from mailflow.core.pending import ACCESS_DECISION
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from tests.support.access_decisions import (
    ADA,
    ANN,
    BEA,
    LI,
    add_second_administrator,
    ask,
    email_to,
    links_in,
    path_of,
    sending,
    user,
)
from tests.support.mail import a_reply, plain_text, receive
from tests.support.pages import Web, csrf_of, enrol
from tests.support.relay import CapturingRelay


@pytest.fixture
def inbound(web: Web, relay: CapturingRelay) -> Iterator[InboundServer]:
    add_second_administrator(web.session)
    for email in (ANN, ADA):
        web.secrets[email] = enrol(web.session, web.settings, email)
    server = InboundServer(web.runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    server.start()
    try:
        with sending(web.runtime):
            relay.wait_for(6)  # the seeded alert's emails
            yield server
    finally:
        server.stop()


def send_reply(server: InboundServer, sender: str, to: str, body: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail(sender, [to], a_reply(sender, to, body, subject="Re: Access request"))


def test_approved_by_reply_then_confirmed_on_the_page(
    web: Web, inbound: InboundServer, relay: CapturingRelay
) -> None:
    request = ask(web.runtime.sessions, web.settings)
    decide_email = email_to(relay, ANN, "Access request: Li Chen")
    send_reply(inbound, ANN, str(decide_email.message["Reply-To"]), "Approve\n\n> APPROVE")
    confirm = email_to(relay, ANN, "Confirm your decision")
    assert confirm.message["In-Reply-To"] is not None
    [link] = links_in(confirm.message, web.settings.base_url, "/access/decision/")
    path = path_of(link, web.settings)
    assert web.db().get_one(AccessRequest, request.id).state is AccessState.OPEN

    client = web.fresh_client()
    page = client.get(path)
    assert page.status_code == 200 and "Approve access for Li Chen" in page.text
    done = client.post(path, data={"csrf_token": csrf_of(page.text), "code": web.code(ANN)})
    assert "Request approved" in done.text
    session = web.db()
    decided = session.get_one(AccessRequest, request.id)
    assert (decided.state, decided.decided_via) == (AccessState.APPROVED, "reply")
    membership = session.scalars(
        select(Membership).where(Membership.user_id == user(session, LI).id)
    ).all()
    assert any(m.access_request_id == request.id for m in membership)
    email_to(relay, LI, "was approved")
    email_to(relay, LI, "open alert")
    email_to(relay, ADA, "Access request decided")


def test_denied_by_reply_with_a_reason(
    web: Web, inbound: InboundServer, relay: CapturingRelay
) -> None:
    request = ask(web.runtime.sessions, web.settings)
    decide_email = email_to(relay, ADA, "Access request: Li Chen")
    send_reply(
        inbound, ADA, str(decide_email.message["Reply-To"]), "DENY: not our supplier\nThanks, Ada"
    )
    confirm = email_to(relay, ADA, "Confirm your decision")
    assert "not our supplier" in plain_text(confirm.message)
    [link] = links_in(confirm.message, web.settings.base_url, "/access/decision/")
    client = web.fresh_client()
    path = path_of(link, web.settings)
    page = client.get(path)
    assert "not our supplier" in page.text
    client.post(
        path,
        data={
            "csrf_token": csrf_of(page.text),
            "reason": "not our supplier",
            "code": web.code(ADA),
        },
    )
    assert web.db().get_one(AccessRequest, request.id).state is AccessState.DENIED
    told = email_to(relay, LI, "was denied")
    assert "Reason: not our supplier" in plain_text(told.message)


def test_a_reply_that_cannot_be_read_or_comes_too_late_is_told_why(
    web: Web, inbound: InboundServer, relay: CapturingRelay
) -> None:
    ask(web.runtime.sessions, web.settings)
    to_ann = email_to(relay, ANN, "Access request: Li Chen")
    to_ada = email_to(relay, ADA, "Access request: Li Chen")
    send_reply(inbound, ANN, str(to_ann.message["Reply-To"]), "I would not approve this yet")
    problem = email_to(relay, ANN, "was not recorded")
    assert "does not start with APPROVE or DENY" in plain_text(problem.message)

    send_reply(inbound, ANN, str(to_ann.message["Reply-To"]), "APPROVE")
    [link] = links_in(
        email_to(relay, ANN, "Confirm your decision").message,
        web.settings.base_url,
        "/access/decision/",
    )
    client = web.fresh_client()
    page = client.get(path_of(link, web.settings))
    client.post(
        path_of(link, web.settings),
        data={"csrf_token": csrf_of(page.text), "code": web.code(ANN)},
    )
    count = len(relay.received)
    send_reply(inbound, ADA, str(to_ada.message["Reply-To"]), "DENY: no")
    late = email_to(relay, ADA, "was not recorded", after=count)
    assert "already approved by Ann Lee" in plain_text(late.message)
    session = web.db()
    assert not session.scalars(
        select(PendingAction).where(
            PendingAction.kind == ACCESS_DECISION,
            PendingAction.user_id == user(session, ADA).id,
        )
    ).all()


def test_a_reply_key_of_one_request_never_decides_another(
    web: Web, inbound: InboundServer, relay: CapturingRelay
) -> None:
    first = ask(web.runtime.sessions, web.settings)
    second = ask(web.runtime.sessions, web.settings, requester=BEA)
    about_first = email_to(relay, ANN, "Access request: Li Chen")
    send_reply(inbound, ANN, str(about_first.message["Reply-To"]), "APPROVE")
    email_to(relay, ANN, "Confirm your decision")
    session = web.db()
    [action] = session.scalars(select(PendingAction).where(PendingAction.kind == ACCESS_DECISION))
    assert action.payload["request_id"] == first.id != second.id


def test_replies_that_cannot_be_read_are_answered_a_few_times_an_hour(
    web: Web, inbound: InboundServer, relay: CapturingRelay
) -> None:
    ask(web.runtime.sessions, web.settings)
    reply_to = str(email_to(relay, ANN, "Access request: Li Chen").message["Reply-To"])
    limit = web.settings.error_replies_per_hour
    for _ in range(limit + 2):
        receive(web.runtime, a_reply(ANN, reply_to, "maybe later"), to=reply_to, envelope_from=ANN)
    session = web.db()
    problems = session.scalars(
        select(OutgoingEmail).where(OutgoingEmail.kind == "access_decision_problem")
    ).all()
    assert len(problems) == limit


@pytest.mark.parametrize(
    ("text", "verb", "reason"),
    [
        ("APPROVE", Verb.APPROVE, ""),
        ("  * approved, thanks\n\nAnn", Verb.APPROVE, ""),
        ("**Deny**: not our supplier", Verb.DENY, "not our supplier"),
        (
            "deny - we do not know them\nReason: no contract",
            Verb.DENY,
            "we do not know them; no contract",
        ),
        ("Hello,\n\nDENY\n", Verb.DENY, ""),
        ("Decision: approve\n-- \nAnn Lee, approve all requests", Verb.APPROVE, ""),
    ],
)
def test_decision_lines_are_read_as_people_write_them(text: str, verb: Verb, reason: str) -> None:
    words = parse_decision(text)
    assert (words.verb, words.reason) == (verb, reason)


def test_a_long_reply_is_read_only_as_far_as_a_decision_needs() -> None:
    # 520 reason lines of 1,900 characters would otherwise make a reason of a megabyte.
    text = "DENY\n" + ("Reason: " + "x" * 1900 + "\n") * 520
    with pytest.raises(ReplyNotUnderstood) as raised:
        parse_decision(text)
    assert "give it in at most 1,000" in str(raised.value)
    assert len(str(raised.value)) < 1000


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Thanks", "no APPROVE or DENY"),
        ("APPROVE\nDENY: no", "both approves and denies"),
        ("We cannot approve this", "does not start with APPROVE or DENY"),
        ("DENY\n" + "Reason: no contract with them\n" * 60, "give it in at most 1,000"),
    ],
)
def test_a_decision_that_is_not_clear_is_not_guessed(text: str, problem: str) -> None:
    with pytest.raises(ReplyNotUnderstood) as raised:
        parse_decision(text)
    assert problem in str(raised.value)

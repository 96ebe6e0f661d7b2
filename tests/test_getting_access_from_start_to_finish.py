"""An outsourced IT provider gets to answer for another trust, the whole
way: Li asks by email to access@ (real SMTP into the inbound server),
confirms with a code, both of Riverside's administrators get the decision
email at the relay, Ann approves from hers with a code, Li is told and
gets Riverside's open alert with its links, Ada is told it was decided,
and the next alert to Riverside reaches Li with links for it."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import AccessRequest, AccessState, Membership, Organisation, Role
from tests.support.access_decisions import (
    ADA,
    ANN,
    LI,
    REASON,
    add_second_administrator,
    email_to,
    links_in,
    path_of,
    user,
)
from tests.support.access_requests import CONFIRM_PATH, MailService, mail_service
from tests.support.mail import a_reply, html_text, plain_text
from tests.support.pages import Web, enrol, post_form
from tests.support.relay import CapturingRelay
from tests.support.seed import issue

STATUS_LINK = re.compile(r"https://mailflow\.test/r/[A-Za-z0-9_.\-]+")


@pytest.fixture
def mail(web: Web, relay: CapturingRelay) -> Iterator[MailService]:
    """Riverside (RXA) with two administrators, both with an app; the
    inbound server and the worker running; the seeded alert's emails sent."""
    add_second_administrator(web.session)
    for email in (ANN, ADA):
        web.secrets[email] = enrol(web.session, web.settings, email)
    with mail_service(web.runtime) as service:
        relay.wait_for(6)
        yield service


def organisations_linked(web: Web, text: str) -> set[str]:
    """The organisations an email's status links answer for, by code."""
    tokens = ANSWER_LINK.tokens(web.settings)
    ids = {tokens.verify(link.rsplit("/", 1)[1])["o"] for link in STATUS_LINK.findall(text)}
    session = web.db()
    return {session.get_one(Organisation, i).code for i in ids}


def test_asking_by_email_then_approved_by_link_lets_li_answer_for_riverside(
    web: Web, mail: MailService, relay: CapturingRelay
) -> None:
    # Li asks, from her mail client, and confirms with her code.
    mail.send(f"Li Chen <{LI}>", f"REQUEST RXA: {REASON}\n\nLi")
    [confirm_path] = CONFIRM_PATH.findall(
        plain_text(email_to(relay, LI, "Confirm your request").message)
    )
    done = post_form(web.client, confirm_path, {"code": web.code(LI)})
    assert done.status_code == 200, done.text
    [request] = web.db().scalars(select(AccessRequest)).all()
    assert (request.state, request.via, request.reason) == (AccessState.OPEN, "email", REASON)

    # Each administrator of Riverside gets one email, with their own links.
    to_ann = email_to(relay, ANN, "Access request: Li Chen")
    to_ada = email_to(relay, ADA, "Access request: Li Chen")
    assert to_ann.message["Reply-To"] != to_ada.message["Reply-To"]
    assert REASON in plain_text(to_ann.message)
    [approve] = [
        link
        for link in links_in(to_ann.message, web.settings.base_url, "/access/")
        if link.endswith("/approve")
    ]
    ann_browser = web.fresh_client()
    shown = ann_browser.get(path_of(approve, web.settings))
    assert shown.status_code == 200 and "Li Chen" in shown.text
    assert web.db().get_one(AccessRequest, request.id).state is AccessState.OPEN

    approved = post_form(ann_browser, path_of(approve, web.settings), {"code": web.code(ANN)})

    assert approved.status_code == 200, approved.text
    session = web.db()
    assert session.get_one(AccessRequest, request.id).state is AccessState.APPROVED
    riverside = session.scalars(select(Organisation).where(Organisation.code == "RXA")).one()
    membership = session.scalars(
        select(Membership).where(
            Membership.user_id == user(session, LI).id,
            Membership.organisation_id == riverside.id,
        )
    ).one()
    assert membership.role is Role.RESPONDER
    assert membership.granted_by_id == user(session, ANN).id
    assert membership.access_request_id == request.id

    # Both sides are told; Li gets Riverside's open alert with its links.
    told = email_to(relay, LI, "was approved")
    assert "RXA" in str(told.message["Subject"])
    to_ada_after = email_to(relay, ADA, "Access request decided")
    assert str(to_ada_after.message["Subject"]).endswith("Li Chen for RXA (approved)")
    open_alerts = email_to(relay, LI, "need")
    assert "CC-4720" in plain_text(open_alerts.message)
    assert organisations_linked(web, plain_text(open_alerts.message)) == {"RXA"}

    # The next alert to Riverside reaches Li with Riverside's links.
    before = len(relay.received)
    with web.runtime.sessions.begin() as writer:
        issue(writer, reference="CC-4801", audience={"organisations": ["RXA"]})
    to_li = email_to(relay, LI, "CC-4801", after=before)
    assert organisations_linked(web, plain_text(to_li.message)) == {"RXA"}
    assert organisations_linked(web, html_text(to_li.message)) == {"RXA"}
    assert "RXA:" in plain_text(to_li.message)  # the reply form's line for it

    # And "ALL:" in a reply to the first alert's email now covers Riverside.
    first_alert = next(r for r in relay.received[:6] if r.recipients == [LI])
    reply_to = str(first_alert.message["Reply-To"])
    with smtplib.SMTP("127.0.0.1", mail.server.port) as client:
        client.sendmail(LI, [reply_to], a_reply(LI, reply_to, "ALL: complete"))
    confirm = email_to(relay, LI, "Confirm your answer")
    for code in ("RXA", "RXB", "RXC"):
        assert f"({code})" in plain_text(confirm.message)

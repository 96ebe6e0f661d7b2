"""Administrators managing their people: people lines emailed to people@
(or in reply to a people email), confirmed on the web page with a second
factor; the /people/TOKEN page; the rules (only administrators, never the
last administrator, a removed person's links stop at once)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from mailflow.access.people_lines import (
    PeopleLine,
    PeopleLinesNotUnderstood,
    parse_people_lines,
    render_line,
)
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import (
    AccessRequest,
    AccessState,
    AuditEvent,
    InboundState,
    Membership,
    Organisation,
    Role,
    User,
)
from mailflow.core.runtime import utc_now
from tests.support.mail import html_text, parsed
from tests.support.pages import Web, answer_link, pending_link, post_form, row_counts, user_id
from tests.support.people_admin import (
    ANN,
    admin_fixture,
    emails,
    link_in,
    reply_key_of,
    send_lines,
    text_of,
)

admin_web = admin_fixture()

# ------------------------------------------------------------ the grammar


def test_each_line_is_read_and_written_back_the_same() -> None:
    text = (
        "Hello,\n\n"
        "* add Jane.Smith@Trust-B.nhs.uk Responder Jane Smith\n"
        "- ADD joe@trust-b.nhs.uk admin Joe Bloggs\n"
        "ADD desk@trust-b.nhs.uk alert only Service Desk\n"
        "rxb: remove bob@trust-b.nhs.uk\n"
        "**ROLE bob@trust-b.nhs.uk administrator**\n"
        "LIST\n\nThanks\n-- \nAnn\nADD sig@x.example responder Sig\n"
    )
    lines = parse_people_lines(text)
    assert [render_line(line) for line in lines] == [
        "ADD jane.smith@trust-b.nhs.uk responder Jane Smith",
        "ADD joe@trust-b.nhs.uk administrator Joe Bloggs",
        "ADD desk@trust-b.nhs.uk alert-only Service Desk",
        "RXB: REMOVE bob@trust-b.nhs.uk",
        "ROLE bob@trust-b.nhs.uk administrator",
        "LIST",
    ]
    assert parse_people_lines("\n".join(render_line(x) for x in lines)) == [
        PeopleLine(x.verb, i + 1, x.code, x.email, x.role, x.name) for i, x in enumerate(lines)
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ADD jane@x.example boss Jane", "'boss' is not a role"),
        ("REMOVE not-an-address", "is not an email address"),
        ("REMOVE a@x.example please", "REMOVE takes only the address"),
        ("ROLE a@x.example", "no role is not a role"),
        ("LIST everyone", "LIST takes nothing after it"),
        ("Hello, thanks", "no ADD, REMOVE, ROLE or LIST line found"),
        ("\n".join(f"REMOVE p{n}@x.example" for n in range(51)), "at most 50 lines"),
    ],
)
def test_a_line_said_wrongly_is_a_problem_never_a_guess(text: str, problem: str) -> None:
    with pytest.raises(PeopleLinesNotUnderstood) as raised:
        parse_people_lines(text)
    assert problem in str(raised.value)


# ------------------------------------------------------ by email, confirmed


def _confirm(web: Web, email_kind: str = "people_confirm") -> str:
    [confirm] = emails(web.db(), email_kind)
    return link_in(confirm, "/people/confirm/")


@pytest.mark.parametrize(
    ("line", "check"),
    [
        (
            "ADD jane@riverside.example responder Jane Smith",
            ("jane@riverside.example", Role.RESPONDER),
        ),
        (
            "ADD joe@riverside.example administrator Joe Bloggs",
            ("joe@riverside.example", Role.ADMINISTRATOR),
        ),
        (
            "ADD desk@riverside.example alert-only Service Desk",
            ("desk@riverside.example", Role.ALERT_ONLY),
        ),
        ("ROLE raj@riverside.example administrator", ("raj@riverside.example", Role.ADMINISTRATOR)),
        ("REMOVE raj@riverside.example", ("raj@riverside.example", None)),
    ],
)
def test_a_line_by_email_is_made_after_the_second_factor(
    admin_web: Web, line: str, check: tuple[str, Role | None]
) -> None:
    web = admin_web
    message = send_lines(web, ANN, f"{line}\n\nThanks, Ann")
    assert message.state == InboundState.PROCESSED, message.outcome
    path = _confirm(web)
    before = row_counts(web.engine)
    page = web.client.get(path)
    assert page.status_code == 200 and "Confirm the changes" in page.text
    assert row_counts(web.engine) == before  # GET changes nothing

    done = post_form(web.client, path, {"code": web.code(ANN)})

    assert done.status_code == 200, done.text
    assert "Changes made" in done.text
    email, role = check
    session = web.db()
    held = session.scalar(
        select(Membership.role)
        .join(User, User.id == Membership.user_id)
        .join(Organisation, Organisation.id == Membership.organisation_id)
        .where(User.email == email, Organisation.code == "RXA")
    )
    assert held == role
    actors = session.scalars(
        select(AuditEvent.actor).where(AuditEvent.subject == f"user:{user_id(session, email)}")
    ).all()
    assert f"user:{user_id(session, ANN)}" in actors
    if line.startswith("ADD"):
        membership = session.scalars(
            select(Membership).where(Membership.user_id == user_id(session, email))
        ).one()
        assert membership.granted_by_id == user_id(session, ANN)
        [welcome] = [e for e in emails(session, "welcome") if e.recipient == email]
        if role is not Role.ALERT_ONLY:
            assert "/enrol/" in text_of(welcome)
    # The link works once.
    again = web.client.post(path, data={"csrf_token": "x", "code": web.code(ANN)})
    assert again.status_code in (403, 409)


def test_an_organisations_name_is_shown_as_text_in_the_html(admin_web: Web) -> None:
    web = admin_web
    session = web.db()
    riverside = session.scalars(select(Organisation).where(Organisation.code == "RXA")).one()
    riverside.name = "Riverside <b>Acute</b> & Co"
    session.commit()

    send_lines(web, ANN, "LIST")

    [listed] = emails(web.db(), "people_list")
    html = html_text(parsed(listed.raw))
    assert "<b>Acute" not in html
    assert "Riverside &lt;b&gt;Acute&lt;/b&gt; &amp; Co" in html


def test_lists_are_limited_per_hour(admin_web: Web) -> None:
    web = admin_web
    limit = web.settings.confirm_emails_per_hour

    outcomes = [send_lines(web, ANN, "LIST").outcome for _ in range(limit + 2)]

    assert len(emails(web.db(), "people_list")) == limit
    assert outcomes[-1] == "LIST asked for; no email (limit of lists an hour reached)"


def test_adding_someone_already_here_gives_the_role_but_keeps_their_name(
    admin_web: Web,
) -> None:
    web = admin_web
    send_lines(web, ANN, "ADD bea@brookfield.example responder Mallory")

    done = post_form(web.client, _confirm(web), {"code": web.code(ANN)})

    assert done.status_code == 200, done.text
    session = web.db()
    bea = session.scalars(select(User).where(User.email == "bea@brookfield.example")).one()
    assert bea.name == "Bea Clarke"
    codes = {m.organisation.code: m.role for m in bea.memberships}
    assert codes == {"RXB": Role.RESPONDER, "RXA": Role.RESPONDER}
    # Not new here: no welcome (she has her app already).
    assert [e for e in emails(session, "welcome") if e.recipient == bea.email] == []


def test_list_answers_at_once_with_roles_second_factor_and_a_reply_key(admin_web: Web) -> None:
    web = admin_web
    send_lines(web, ANN, "LIST")
    [listed] = emails(web.db(), "people_list")
    text = text_of(listed)
    assert "raj@riverside.example>: responder, second factor set up" in text
    assert "ann@riverside.example>: administrator, second factor set up" in text
    assert "/people/" in text
    # An answer to their message, in its thread.
    assert parsed(listed.raw)["Auto-Submitted"] == "auto-replied"
    assert parsed(listed.raw)["In-Reply-To"] is not None
    # A reply to it is read as people lines for RXA.
    key = reply_key_of(listed)
    send_lines(web, ANN, "REMOVE raj@riverside.example", to=key)
    assert len(emails(web.db(), "people_confirm")) == 1


def test_the_code_is_needed_when_administering_several(admin_web: Web) -> None:
    web = admin_web
    with web.runtime.sessions.begin() as session:
        from mailflow.people.users import add_user

        add_user(
            session,
            email=ANN,
            name=None,
            role="administrator",
            org_code="RXD",
            now=utc_now(),
            actor="test",
        )
    send_lines(web, ANN, "REMOVE raj@riverside.example")
    [refused] = emails(web.db(), "people_refused")
    assert "start the line with the code" in text_of(refused)
    send_lines(web, ANN, "RXA: REMOVE raj@riverside.example")
    assert len(emails(web.db(), "people_confirm")) == 1


@pytest.mark.parametrize("sender", ["raj@riverside.example", "stranger@elsewhere.example"])
def test_a_non_administrator_is_refused_and_nothing_changes(admin_web: Web, sender: str) -> None:
    web = admin_web
    before = row_counts(web.engine).get("memberships")
    message = send_lines(web, sender, "REMOVE ann@riverside.example")
    assert message.state == InboundState.PROCESSED
    [refused] = emails(web.db(), "people_refused")
    assert refused.recipient == sender
    assert "Nothing was changed" in text_of(refused)
    # Links are personal: someone we do not know is given none.
    assert ("/access/new/" in text_of(refused)) is (sender == "raj@riverside.example")
    assert emails(web.db(), "people_confirm") == []
    assert before is None or row_counts(web.engine)["memberships"] == before


def test_an_auto_reply_or_forged_sender_gets_nothing(admin_web: Web) -> None:
    web = admin_web
    auto = send_lines(web, ANN, "LIST", headers={"Auto-Submitted": "auto-replied"})
    # Two addresses in From: no strict sender, so no one to trust or answer.
    forged = send_lines(web, f"{ANN}, mallory@evil.example", "LIST")
    assert auto.state == InboundState.IGNORED
    assert forged.state == InboundState.IGNORED, forged.outcome
    assert emails(web.db()) == []


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "line", ["REMOVE ann@riverside.example", "ROLE ann@riverside.example responder"]
)
def test_the_last_administrator_can_be_neither_removed_nor_demoted(
    admin_web: Web, line: str
) -> None:
    web = admin_web
    send_lines(web, ANN, line)
    refused = post_form(web.client, _confirm(web), {"code": web.code(ANN)})
    assert refused.status_code == 403
    assert "no active administrator" in refused.text
    session = web.db()
    role = session.scalar(
        select(Membership.role).where(Membership.user_id == user_id(session, ANN))
    )
    assert role == Role.ADMINISTRATOR


def test_removal_stops_outstanding_links_answers_and_requests(admin_web: Web) -> None:
    web = admin_web
    session = web.db()
    raj = user_id(session, "raj@riverside.example")
    status_path = answer_link(
        session, web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    confirm_path = pending_link(
        session,
        web.settings,
        "raj@riverside.example",
        [AnswerValue("RXA", AnswerStatus.COMPLETE, 1)],
    )
    rxd = session.scalar(select(Organisation.id).where(Organisation.code == "RXD"))
    session.add(
        AccessRequest(
            requester_id=raj,
            organisation_id=rxd,
            reason="r",
            via="email",
            state=AccessState.OPEN,
            created_at=utc_now(),
            expires_at=utc_now() + timedelta(days=7),
        )
    )
    session.commit()
    raj_client = web.fresh_client("10.0.0.2")
    assert raj_client.get(status_path).status_code == 200

    send_lines(web, ANN, "REMOVE raj@riverside.example")
    assert post_form(web.client, _confirm(web), {"code": web.code(ANN)}).status_code == 200

    assert raj_client.get(status_path).status_code in (403, 410)
    assert raj_client.get(confirm_path).status_code in (403, 410)
    session = web.db()
    session.expire_all()
    assert session.scalars(select(AccessRequest.state)).one() == AccessState.WITHDRAWN
    assert session.get_one(User, raj).active is False


# ----------------------------------------------------------- /people/TOKEN


def test_the_people_page_lists_and_commits_once(admin_web: Web) -> None:
    web = admin_web
    send_lines(web, ANN, "LIST")
    path = link_in(emails(web.db(), "people_list")[0], "/people/")
    before = row_counts(web.engine)
    page = web.client.get(path)
    assert page.status_code == 200
    assert "raj@riverside.example" in page.text and "set up" in page.text
    assert row_counts(web.engine) == before

    raj = user_id(web.db(), "raj@riverside.example")
    done = post_form(
        web.client,
        path,
        {
            f"change-{raj}": "alert-only",
            "add-email": "kim@riverside.example",
            "add-name": "Kim Park",
            "add-role": "responder",
            "code": web.code(ANN),
        },
    )
    assert done.status_code == 200, done.text
    assert "Make raj@riverside.example alert-only at RXA" in done.text
    session = web.db()
    assert (
        session.scalar(select(Membership.role).where(Membership.user_id == raj)) == Role.ALERT_ONLY
    )
    assert [e.recipient for e in emails(session, "welcome")][-1] == "kim@riverside.example"
    assert len(emails(session, "people_done")) == 1
    # Single use: the link now says so, and a fresh one was emailed.
    assert "Already used" in web.client.get(path).text


def test_adding_someone_on_the_page_without_a_name_is_shown_beside_the_name(
    admin_web: Web,
) -> None:
    web = admin_web
    send_lines(web, ANN, "LIST")
    path = link_in(emails(web.db(), "people_list")[0], "/people/")
    web.client.get(path)
    before = row_counts(web.engine)

    page = post_form(
        web.client,
        path,
        {"add-email": "kim@riverside.example", "add-role": "responder", "code": web.code(ANN)},
    )

    assert page.status_code == 400
    assert 'id="add-name-error"' in page.text and "give the name" in page.text
    assert 'href="#add-name"' in page.text  # the summary at the top leads to it
    assert row_counts(web.engine) == before

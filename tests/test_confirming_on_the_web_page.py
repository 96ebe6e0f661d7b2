"""The confirmation pages, through Starlette's test client on SQLite and
PostgreSQL: a GET or HEAD never changes anything, a POST commits once and
only with the CSRF token and a second factor from the person the link was
sent to, and every refusal is a clear page with nothing written."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from starlette.testclient import TestClient

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import Answer, Confirmation, OutgoingEmail
from mailflow.core.runtime import Runtime, utc_now
from mailflow.core.second_factor import mfa
from mailflow.people.users import remove_user
from mailflow.people.welcome_email import enrolment_link
from mailflow.web import create_app
from tests.support.cli import mailflow_with
from tests.support.pages import (
    ANSWER_TABLES,
    BASE,
    Web,
    answer_counts,
    answer_link,
    pending_link,
    post_form,
    read_form,
    row_counts,
    user_id,
    verified_client,
)

# ------------------------------------------------------------------ /r/ links


def test_a_status_link_shows_the_answer_and_records_it_with_a_code(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    page = web.client.get(path)
    assert page.status_code == 200
    assert "CC-4720" in page.text and "Riverside Acute NHS Trust (RXA)" in page.text
    assert "Complete" in page.text and 'id="note"' in page.text
    assert 'id="reason"' not in page.text

    done = post_form(
        web.client, path, {"note": "Patched", "code": web.code("raj@riverside.example")}
    )

    assert done.status_code == 200, done.text
    assert done.url.path == "/recorded"
    assert "Answer recorded" in done.text and "Note: Patched" in done.text
    answer = web.db().scalars(select(Answer)).one()
    assert (answer.status, answer.via, answer.note) == ("complete", "link", "Patched")
    # A receipt for Raj, and one for Ann, RXA's administrator.
    receipts = (
        web.db()
        .scalars(select(OutgoingEmail.recipient).where(OutgoingEmail.kind == "receipt"))
        .all()
    )
    assert sorted(receipts) == ["ann@riverside.example", "raj@riverside.example"]


def test_one_answer_can_be_extended_to_the_persons_other_organisations(web: Web) -> None:
    path = answer_link(web.db(), web.settings, "li@itservices.example", "RXB", AnswerStatus.UNABLE)
    page = web.client.get(path)
    assert 'name="also" value="RXC"' in page.text
    assert 'value="RXB"' not in page.text  # the link's own organisation is not offered again

    done = post_form(
        web.client,
        path,
        {
            "reason": "Vendor patch breaks the clinical system",
            "mitigations": "Interface blocked at the firewall",
            "also": ["RXC"],
            "code": web.code("li@itservices.example"),
        },
    )

    assert done.status_code == 200, done.text
    rows = (
        web.db()
        .execute(
            sa.text(
                "select o.code, a.status, a.reason from answers a "
                "join organisations o on o.id = a.organisation_id order by o.code"
            )
        )
        .all()
    )
    assert [tuple(r) for r in rows] == [
        ("RXB", "unable", "Vendor patch breaks the clinical system"),
        ("RXC", "unable", "Vendor patch breaks the clinical system"),
    ]


def test_missing_information_is_named_at_the_top_and_linked_to_its_field(web: Web) -> None:
    path = answer_link(web.db(), web.settings, "li@itservices.example", "RXB", AnswerStatus.UNABLE)
    before = row_counts(web.engine)

    page = post_form(web.client, path, {"reason": " ", "code": web.code("li@itservices.example")})

    assert page.status_code == 400
    form = read_form(page.text)
    assert form.summary_links == ["#reason", "#mitigations"]
    assert form.described["reason"] == "reason-hint reason-error"
    assert "<title>Error:" in page.text
    assert row_counts(web.engine) == before  # not even the code was used
    # The same code still works once the form is complete.
    done = post_form(
        web.client,
        path,
        {"reason": "r", "mitigations": "m", "code": web.code("li@itservices.example")},
    )
    assert done.status_code == 200, done.text


@pytest.mark.parametrize("kind", ["enrol", "answer", "confirm"])
def test_gets_and_heads_change_nothing_and_the_link_still_works(web: Web, kind: str) -> None:
    if kind == "enrol":
        path = enrolment_link(web.settings, user_id(web.db(), "ann@riverside.example"))
        path = path.removeprefix(web.settings.base_url)
    elif kind == "answer":
        path = answer_link(
            web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
        )
    else:
        path = pending_link(
            web.db(),
            web.settings,
            "raj@riverside.example",
            [AnswerValue("RXA", AnswerStatus.COMPLETE)],
        )
    before = row_counts(web.engine)

    for _ in range(10):
        assert web.fresh_client().get(path).status_code == 200
        assert web.fresh_client().head(path).status_code == 200
        assert web.client.get(path).status_code == 200
        assert web.client.head(path).status_code == 200

    assert row_counts(web.engine) == before
    if kind == "enrol":
        scan = post_form(web.client, path, {"action": "start"})
        secret = re.search(r'id="secret">([A-Z2-7 ]+)<', scan.text)
        assert secret
        code = pyotp.TOTP(secret.group(1).replace(" ", "")).now()
        done = post_form(web.client, path, {"action": "finish", "code": code})
        assert "Keep your recovery codes" in done.text
        assert len(re.findall(r"<li>[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}</li>", done.text)) == 10
    else:
        done = post_form(web.client, path, {"code": web.code("raj@riverside.example")})
        assert done.url.path == "/recorded"
        assert web.db().scalar(select(func.count()).select_from(Answer)) == 1


def test_twenty_posts_at_once_with_one_link_commit_exactly_once(web: Web) -> None:
    raj = user_id(web.db(), "raj@riverside.example")
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    clients = [verified_client(web, raj) for _ in range(20)]
    statuses: list[int] = []
    barrier = threading.Barrier(len(clients))
    lock = threading.Lock()

    def post(client: TestClient, csrf: str) -> None:
        with client:
            barrier.wait()
            response = client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=post, args=pair) for pair in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(statuses) == [303] + [409] * 19
    assert web.db().scalar(select(func.count()).select_from(Answer)) == 1
    assert web.db().scalar(select(func.count()).select_from(OutgoingEmail)) == 2


def test_a_code_used_once_is_refused_the_second_time(web: Web) -> None:
    code = web.code("raj@riverside.example")
    first = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    assert post_form(web.client, first, {"code": code}).status_code == 200
    second = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.IN_PROGRESS
    )
    before = answer_counts(web.engine)

    page = post_form(web.fresh_client(), second, {"code": code})

    assert page.status_code == 400
    assert "That code has already been used" in page.text
    assert read_form(page.text).summary_links == ["#code"]
    assert answer_counts(web.engine) == before


@pytest.mark.parametrize("csrf", [None, "", "not-the-token"])
def test_a_post_without_the_right_csrf_token_is_refused(web: Web, csrf: str | None) -> None:
    raj = user_id(web.db(), "raj@riverside.example")
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    client, _ = verified_client(web, raj)
    before = row_counts(web.engine)

    data = {"code": web.code("raj@riverside.example")}
    if csrf is not None:
        data["csrf_token"] = csrf
    page = client.post(path, data=data)

    assert page.status_code == 403
    assert "This form has expired" in page.text
    assert row_counts(web.engine) == before


def test_a_forwarded_link_opened_by_someone_else_signed_in_is_refused(web: Web) -> None:
    bea = user_id(web.db(), "bea@brookfield.example")
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    client, csrf = verified_client(web, bea)
    before = row_counts(web.engine)

    shown = client.get(path)
    posted = client.post(path, data={"csrf_token": csrf, "code": web.code("raj@riverside.example")})

    for page in (shown, posted):
        assert page.status_code == 403
        assert "This link was sent to someone else" in page.text
        assert "Sign out" in page.text
    assert row_counts(web.engine) == before


def test_a_person_whose_access_was_removed_after_the_email_cannot_answer(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    page = web.client.get(path)
    csrf = read_form(page.text).csrf
    remove_user(
        web.db(),
        email="raj@riverside.example",
        org_code="RXA",
        now=utc_now(),
        actor="test",
    )
    web.session.commit()
    before = row_counts(web.engine)

    posted = web.client.post(
        path, data={"csrf_token": csrf, "code": web.code("raj@riverside.example")}
    )

    assert posted.status_code == 403
    assert "You no longer answer for Riverside Acute NHS Trust (RXA)" in posted.text
    assert row_counts(web.engine) == before


def test_expired_and_tampered_links_are_refused_and_change_nothing(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    later = Runtime(web.settings, clock=lambda: utc_now() + timedelta(days=31))
    before = row_counts(web.engine)
    try:
        with TestClient(create_app(later), base_url=BASE) as client:
            expired = client.get(path)
            expired_post = client.post(path, data={"code": "123456"})
    finally:
        later.close()
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    bad = web.client.get(tampered)
    bad_post = web.client.post(
        tampered, data={"csrf_token": read_form(web.client.get(path).text).csrf, "code": "1"}
    )

    assert expired.status_code == 410 and "This link has expired" in expired.text
    assert expired_post.status_code == 403  # no session, so no CSRF token either
    assert bad.status_code == 400 and "This link is not valid" in bad.text
    assert bad_post.status_code == 400
    assert answer_counts(web.engine) == {k: v for k, v in before.items() if k in ANSWER_TABLES}


# ------------------------------------------------------------------ /c/ links


def test_a_replys_answers_are_confirmed_with_edited_information_once(web: Web) -> None:
    path = pending_link(
        web.db(),
        web.settings,
        "li@itservices.example",
        [
            AnswerValue("RXB", AnswerStatus.NOT_APPLICABLE, reason="We do not run it"),
            AnswerValue("RXC", AnswerStatus.IN_PROGRESS),
        ],
    )
    page = web.client.get(path)
    assert page.status_code == 200
    assert "We do not run it" in page.text and 'id="RXC-expected-day"' in page.text

    done = post_form(
        web.client,
        path,
        {
            "RXB-reason": "We do not run the product anywhere",
            "RXC-expected-day": "5",
            "RXC-expected-month": "12",
            "RXC-expected-year": "2026",
            "code": web.code("li@itservices.example"),
        },
    )

    assert done.status_code == 200, done.text
    rows = (
        web.db()
        .execute(
            sa.text(
                "select o.code, a.status, a.reason, a.expected_on, a.via, a.confirmation_id "
                "from answers a join organisations o on o.id = a.organisation_id order by o.code"
            )
        )
        .all()
    )
    confirmation = web.db().scalars(select(Confirmation)).one()
    web.session.refresh(confirmation)
    assert [(r[0], r[1], r[2], str(r[3]), r[4], r[5]) for r in rows] == [
        (
            "RXB",
            "not_applicable",
            "We do not run the product anywhere",
            "None",
            "reply",
            confirmation.id,
        ),
        ("RXC", "in_progress", None, "2026-12-05", "reply", confirmation.id),
    ]
    assert confirmation.used_at is not None
    before = row_counts(web.engine)

    again = web.client.post(path, data={"csrf_token": read_form(page.text).csrf})
    shown = web.client.get(path)

    assert again.status_code == 409 and "already been recorded" in again.text
    assert shown.status_code == 200 and "already been recorded" in shown.text
    assert row_counts(web.engine) == before


def test_a_bad_date_in_a_confirmation_is_linked_to_its_organisations_field(web: Web) -> None:
    path = pending_link(
        web.db(),
        web.settings,
        "li@itservices.example",
        [
            AnswerValue("RXB", AnswerStatus.UNABLE, reason="r", mitigations="m"),
            AnswerValue("RXC", AnswerStatus.IN_PROGRESS),
        ],
    )
    before = row_counts(web.engine)

    page = post_form(
        web.client,
        path,
        {
            "RXB-reason": "r",
            "RXB-mitigations": "",
            "RXC-expected-day": "31",
            "RXC-expected-month": "2",
            "RXC-expected-year": "2026",
        },
    )

    assert page.status_code == 400
    form = read_form(page.text)
    assert form.summary_links == ["#RXB-mitigations", "#RXC-expected-day", "#code"]
    assert 'value="31"' in page.text  # what was typed is shown again
    assert row_counts(web.engine) == before


# ------------------------------------------------------- pages and headers


def test_every_response_carries_the_security_headers_and_a_safe_cookie(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    for response in (
        web.fresh_client().get(path),
        web.fresh_client().get("/no/such/page"),
        web.fresh_client().get("/r/tampered"),
    ):
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        assert "<script" not in response.text and "style=" not in response.text
    cookie = web.fresh_client().get(path).headers["set-cookie"]
    assert cookie.startswith("__Host-mailflow=")
    assert "httponly" in cookie.lower() and "secure" in cookie.lower()
    assert "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()
    assert "domain=" not in cookie.lower()


def test_a_plain_http_site_gets_a_cookie_without_the_host_prefix(
    settings_for: Any, database_url: str
) -> None:
    runtime = Runtime(settings_for(database_url, base_url="http://127.0.0.1:8000"))
    try:
        with TestClient(create_app(runtime)) as client:
            cookie = client.get("/enrol/x").headers.get("set-cookie", "")
            home = client.get("/")
    finally:
        runtime.close()
    assert home.status_code == 200
    assert cookie == "" or cookie.startswith("mailflow=")


def test_unknown_pages_and_methods_get_plain_pages_without_a_trace(web: Web) -> None:
    missing = web.client.get("/nothing-here")
    wrong = web.client.put("/r/abc")

    assert missing.status_code == 404 and "Page not found" in missing.text
    assert wrong.status_code == 405 and "cannot be used that way" in wrong.text
    assert "GET" in wrong.headers["allow"]
    assert "Traceback" not in missing.text + wrong.text


def test_every_field_has_a_label_and_the_stylesheet_is_served(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "li@itservices.example", "RXB", AnswerStatus.IN_PROGRESS
    )
    form = read_form(web.client.get(path).text)
    assert form.inputs
    assert {i for i, _ in form.inputs} <= form.labels_for
    css = web.client.get("/static/mailflow.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "#005eb8" in css.text


# ----------------------------------------------------------- the commands


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_a_new_user_gets_a_welcome_email_and_a_reset_sends_a_new_link(
    web: Web, in_tmp: None
) -> None:
    added = mailflow_with(
        web.settings,
        "users",
        "add",
        "nia@riverside.example",
        "--name",
        "Nia Shah",
        "--org",
        "RXA",
        "--role",
        "responder",
    )
    assert added.exit_code == 0, added.output
    again = mailflow_with(
        web.settings,
        "users",
        "add",
        "nia@riverside.example",
        "--org",
        "RXB",
        "--role",
        "responder",
    )
    assert again.exit_code == 0, again.output
    reset = mailflow_with(web.settings, "users", "reset-mfa", "raj@riverside.example")
    assert reset.exit_code == 0, reset.output

    emails = (
        web.db()
        .scalars(
            select(OutgoingEmail).where(OutgoingEmail.kind == "welcome").order_by(OutgoingEmail.id)
        )
        .all()
    )
    assert [e.recipient for e in emails] == ["nia@riverside.example", "raj@riverside.example"]
    assert b"Subject: Welcome to Cyber alerts" in emails[0].raw
    assert b"https://mailflow.test/enrol/" in emails[0].raw
    assert b"Subject: Set up your authenticator app again" in emails[1].raw
    assert not mfa.is_enrolled(web.db(), user_id(web.db(), "raj@riverside.example"))


def test_alert_status_shows_each_organisation_and_its_answer(web: Web, in_tmp: None) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    assert post_form(web.client, path, {"code": web.code("raj@riverside.example")}).is_success

    shown = mailflow_with(web.settings, "alert", "status", "CC-4720", "--json")
    text = mailflow_with(web.settings, "alert", "status", "cc-4720")

    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    by_code = {row["organisation"]: row for row in data["organisations"]}
    assert set(by_code) == {"RXA", "RXB", "RXC"}
    assert by_code["RXA"]["status"] == "complete"
    assert by_code["RXA"]["answered_by"] == "raj@riverside.example"
    assert by_code["RXA"]["within_deadline"] is True
    assert by_code["RXB"]["status"] is None
    assert "RXB        no answer" in text.output
    assert "RXA        Complete  by raj@riverside.example" in text.output
    assert datetime.fromisoformat(by_code["RXA"]["answered_at"]) <= datetime.now(UTC)


def test_a_set_up_link_sent_before_a_reset_no_longer_works(web: Web, in_tmp: None) -> None:
    raj = user_id(web.db(), "raj@riverside.example")
    old = enrolment_link(web.settings, raj, datetime.now(UTC) - timedelta(hours=1))
    reset = mailflow_with(web.settings, "users", "reset-mfa", "raj@riverside.example")
    assert reset.exit_code == 0, reset.output
    email = web.db().scalars(select(OutgoingEmail).where(OutgoingEmail.kind == "welcome")).one()
    sent = message_from_bytes(email.raw, policy=default)
    text = sent.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    new = re.search(r"https://mailflow\.test(/enrol/[A-Za-z0-9_.\-]+)", text)
    assert new is not None

    refused = web.client.get(old.removeprefix("https://mailflow.test"))
    assert refused.status_code == 410
    assert "replaced by a newer one" in refused.text
    assert web.client.get(new.group(1)).status_code == 200

"""A right code lets the same browser commit again for ten minutes; that
must end when the server says so: when the person signs out (a copy of the
cookie stops working too), when their second factor is reset, and when
they are removed (added again, they get neither their old authenticator
nor their old links back)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.pages.committing import NEEDS_CODE
from mailflow.core.pages.security import session_cookie_name
from mailflow.core.second_factor import mfa
from tests.support.cli import mailflow_with
from tests.support.pages import (
    Web,
    answer_counts,
    answer_link,
    csrf_of,
    emails_of_kind,
    post_form,
    user_id,
)

RAJ = "raj@riverside.example"


def mailflow(settings: Settings, *args: str) -> Any:
    result = mailflow_with(settings, *args)
    assert result.exit_code == 0, result.output
    return result


def answer_with_a_code(web: Web, client: TestClient, status: AnswerStatus) -> None:
    path = answer_link(web.db(), web.settings, RAJ, "RXA", status)
    done = post_form(client, path, {"code": web.code(RAJ)})
    assert done.url.path == "/recorded", done.text


def post_without_a_code(web: Web, client: TestClient, status: AnswerStatus) -> Any:
    """What a verified browser sends: the page asks for no code."""
    path = answer_link(web.db(), web.settings, RAJ, "RXA", status)
    page = client.get(path)
    assert page.status_code == 200
    return client.post(path, data={"csrf_token": csrf_of(page.text)}, follow_redirects=True)


def test_a_browser_verified_before_a_second_factor_reset_must_give_a_code_again(
    web: Web, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    answer_with_a_code(web, web.client, AnswerStatus.IN_PROGRESS)
    mailflow(web.settings, "users", "reset-mfa", RAJ)
    before = answer_counts(web.engine)

    page = post_without_a_code(web, web.client, AnswerStatus.COMPLETE)

    assert page.status_code == 400
    assert "Enter the code from your authenticator app" in page.text
    assert answer_counts(web.engine) == before


def test_a_copied_cookie_stops_working_when_its_owner_signs_out(web: Web) -> None:
    answer_with_a_code(web, web.client, AnswerStatus.IN_PROGRESS)
    # Someone copies Raj's cookie (a shared computer, a stolen profile).
    thief = web.fresh_client("203.0.113.9")
    name = session_cookie_name(web.settings)
    cookie = web.client.cookies.get(name)
    assert cookie
    thief.cookies.set(name, cookie)

    # Raj signs out (with the form a refusal page offers: it is their
    # session's CSRF token either way).
    page = web.client.get(answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.UNABLE))
    signed_out = web.client.post(
        "/sign-out", data={"csrf_token": csrf_of(page.text)}, follow_redirects=True
    )
    assert signed_out.url.path == "/signed-out"
    before = answer_counts(web.engine)

    refused = post_without_a_code(web, thief, AnswerStatus.COMPLETE)

    assert refused.status_code == 400
    assert NEEDS_CODE.replace("'", "&#39;") in refused.text
    assert answer_counts(web.engine) == before


def test_a_person_removed_and_added_again_gets_neither_their_old_app_nor_old_links(
    web: Web, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    answer_with_a_code(web, web.client, AnswerStatus.IN_PROGRESS)
    old_link = answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.COMPLETE)
    csrf = csrf_of(web.client.get(old_link).text)
    time.sleep(1.05)  # links carry whole seconds: the removal comes after this one
    mailflow(web.settings, "users", "remove", RAJ)
    mailflow(web.settings, "users", "add", RAJ, "--org", "RXA", "--role", "responder")
    before = answer_counts(web.engine)

    shown = web.client.get(old_link)
    posted = web.fresh_client().post(
        old_link, data={"csrf_token": "x", "code": web.code(RAJ)}, follow_redirects=True
    )
    verified_browser = web.client.post(old_link, data={"csrf_token": csrf})

    assert shown.status_code == 410
    assert "sent before your access was removed" in shown.text
    assert posted.status_code in (403, 410)
    assert verified_browser.status_code == 410
    assert answer_counts(web.engine) == before
    assert not mfa.is_enrolled(web.db(), user_id(web.db(), RAJ))
    welcome = emails_of_kind(web.db(), "welcome")
    assert [str(m["To"]) for m in welcome] == ["Raj Patel <raj@riverside.example>"]

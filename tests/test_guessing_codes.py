"""Someone who holds one of a person's links and guesses codes: every
wrong code looks the same to them, their guesses slow them down but not
the owner, the owner is told by email, and a used recovery code typed
again and again is not taken for guessing."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from html import unescape
from typing import Any

import pyotp
import pytest

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.pages import committing
from mailflow.core.runtime import utc_now
from mailflow.core.second_factor import mfa
from tests.support.pages import (
    Web,
    answer_counts,
    answer_link,
    csrf_of,
    emails_of_kind,
    post_form,
    row_counts,
    user_id,
)

RAJ = "raj@riverside.example"
ANN = "ann@riverside.example"
ATTACKER = "203.0.113.9"


def code_error(html: str) -> str:
    """The message shown beside the code field."""
    found = re.search(r'id="code-error">.*?Error:</span>([^<]*)</span>', html, re.S)
    assert found, "the page shows no error for the code"
    return " ".join(unescape(found.group(1)).split())


def wrong_code(web: Web, email: str) -> str:
    near = {web.code(email, timedelta(seconds=30 * n)) for n in range(-12, 13)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)


def test_a_code_for_a_later_time_gets_the_same_answer_as_any_wrong_code(web: Web) -> None:
    path = answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.COMPLETE)
    before = answer_counts(web.engine)

    later = web.code(RAJ, timedelta(minutes=2))  # works in two minutes' time
    ahead = post_form(web.fresh_client(ATTACKER), path, {"code": later})
    wrong = post_form(web.fresh_client(ATTACKER), path, {"code": wrong_code(web, RAJ)})

    assert ahead.status_code == wrong.status_code == 400
    assert code_error(ahead.text) == code_error(wrong.text) == mfa.WrongCode.default_message
    assert answer_counts(web.engine) == before
    assert row_counts(web.engine)["mfa_failures"] == 2


def test_someone_guessing_with_a_persons_link_is_slowed_but_the_owner_is_not(web: Web) -> None:
    path = answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.COMPLETE)
    attacker = web.fresh_client(ATTACKER)
    guess = wrong_code(web, RAJ)
    before = answer_counts(web.engine)

    pages = [post_form(attacker, path, {"code": guess}) for _ in range(5)]
    lucky = post_form(attacker, path, {"code": web.code(RAJ)})

    assert [p.status_code for p in pages] == [400] * 4 + [429]
    assert "Too many wrong codes" in code_error(pages[-1].text)
    assert lucky.status_code == 429  # even a right code, while that source waits
    warnings = emails_of_kind(web.db(), "locked_out")
    assert [str(m["To"]) for m in warnings] == ["Raj Patel <raj@riverside.example>"]
    text = warnings[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "wrong authenticator codes" in text and guess not in text
    assert {k: v for k, v in answer_counts(web.engine).items()} == {
        **before,
        "outgoing_emails": before["outgoing_emails"] + 1,
        "jobs": before["jobs"] + 1,
    }

    # Raj, from his own computer, answers as usual.
    done = post_form(web.client, path, {"code": web.code(RAJ)})
    assert done.url.path == "/recorded", done.text


def test_guesses_are_still_slowed_when_the_warning_email_cannot_be_written(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the warning email could not be rendered")

    monkeypatch.setattr(committing, "queue_locked_out_email", broken)
    path = answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.COMPLETE)
    attacker = web.fresh_client(ATTACKER, raise_errors=False)
    guess = wrong_code(web, RAJ)

    pages = [post_form(attacker, path, {"code": guess}) for _ in range(10)]

    # The fifth starts the wait and every later guess waits: the failed
    # warning undid nothing.
    assert [p.status_code for p in pages] == [400] * 4 + [429] * 6
    assert row_counts(web.engine)["mfa_failures"] == 5
    assert emails_of_kind(web.db(), "locked_out") == []


def test_a_used_recovery_code_typed_thirty_times_at_once_does_not_lock_the_owner_out(
    web: Web,
) -> None:
    ann = user_id(web.db(), ANN)
    then = utc_now() - timedelta(minutes=10)
    secret = mfa.start_enrolment(
        web.db(), user_id=ann, secret_key=web.settings.secret_key, now=then
    )
    codes = mfa.finish_enrolment(
        web.session,
        user_id=ann,
        code=pyotp.TOTP(secret).at(then),
        secret_key=web.settings.secret_key,
        now=then,
    )
    web.session.commit()
    first = answer_link(web.db(), web.settings, ANN, "RXA", AnswerStatus.IN_PROGRESS)
    assert post_form(web.fresh_client(), first, {"code": codes[0]}).url.path == "/recorded"
    second = answer_link(web.db(), web.settings, ANN, "RXA", AnswerStatus.COMPLETE)
    before = answer_counts(web.engine)
    statuses: list[int] = []
    messages: set[str] = set()
    lock = threading.Lock()
    clients = [web.fresh_client() for _ in range(30)]
    forms = [(client, csrf_of(client.get(second).text)) for client in clients]
    barrier = threading.Barrier(len(forms))

    def post(client: Any, csrf: str) -> None:
        barrier.wait()
        page = client.post(second, data={"csrf_token": csrf, "code": codes[0]})
        with lock:
            statuses.append(page.status_code)
            messages.add(code_error(page.text))

    threads = [threading.Thread(target=post, args=form) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert statuses == [400] * 30
    assert messages == {mfa.RECOVERY_CODE_USED}
    assert row_counts(web.engine)["mfa_failures"] == 0
    assert answer_counts(web.engine) == before
    done = post_form(web.fresh_client(), second, {"code": codes[1]})
    assert done.url.path == "/recorded", done.text

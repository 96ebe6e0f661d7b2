"""A link's token is as good as the link: when a request fails, the log
names the route and a short digest of the token, never the token."""

from __future__ import annotations

import hashlib
import logging
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request

import pytest
import sqlalchemy as sa

from mailflow.answers import answering
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli.web_command import web_server
from mailflow.config import Settings
from mailflow.core.runtime import Runtime
from tests.support.pages import Web, answer_counts, answer_link, csrf_of, post_form
from tests.support.relay import free_port
from tests.support.waiting import wait_until


def test_an_error_while_recording_logs_the_route_and_a_digest_never_the_token(
    web: Web, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    token = path.removeprefix("/r/")

    def broken(*args: object, **kwargs: object) -> None:
        # The worst case: an error whose message quotes the address.
        raise RuntimeError(f"the database went away while recording {path}")

    monkeypatch.setattr(answering, "record_answers", broken)
    before = answer_counts(web.engine)
    caplog.set_level(logging.DEBUG)

    page = post_form(
        web.fresh_client(raise_errors=False), path, {"code": web.code("raj@riverside.example")}
    )

    assert page.status_code == 500
    assert "Nothing has been recorded" in page.text
    assert answer_counts(web.engine) == before
    # The service's own log (the test's HTTP client logs its requests too).
    ours = [r for r in caplog.records if r.name.startswith("mailflow")]
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in ours)
    assert "error on POST /r/{token} token=sha256:" in logged
    assert hashlib.sha256(token.encode()).hexdigest()[:8] in logged
    assert "RuntimeError: the database went away" in logged
    assert ours
    for record in ours:
        assert token not in record.getMessage()
        assert token not in (record.exc_text or "")
        assert record.exc_info is None


def test_behind_the_real_web_server_no_log_at_all_holds_the_token(
    web: Web, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    token = path.removeprefix("/r/")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"the database went away while recording {path}")

    monkeypatch.setattr(answering, "record_answers", broken)
    caplog.set_level(logging.DEBUG)
    port = free_port()
    server = web_server(web.runtime, "127.0.0.1", port)
    # uvicorn's loggers do not propagate to the root, where caplog listens.
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10, what="the web server to start")
        url = f"http://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url) as opened:
            page = opened.read().decode()
            # The cookie is Secure (the service's address is https), so it
            # is handed back by hand over this plain-HTTP loopback.
            cookie = opened.headers["Set-Cookie"].split(";", 1)[0]
        form = urllib.parse.urlencode(
            {"csrf_token": csrf_of(page), "code": web.code("raj@riverside.example")}
        ).encode()
        post = urllib.request.Request(url, data=form, headers={"Cookie": cookie})
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(post)
        failed.value.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        uvicorn_log.removeHandler(caplog.handler)

    assert failed.value.code == 500
    # Every logger, the web server's own (uvicorn.error) included.
    assert any("error on POST /r/{token}" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in (record.exc_text or "")
        if record.exc_info:
            assert token not in "".join(traceback.format_exception(*record.exc_info))


def test_a_database_error_does_not_carry_what_was_being_written(settings: Settings) -> None:
    """An error from the database names the statement, never its values
    (a raw email with its links, a token): they would reach the log."""
    runtime = Runtime(settings)
    secret = "https://mailflow.test/r/a-signed-link-token"
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught, runtime.sessions.begin() as session:
            session.execute(sa.text("insert into no_such_table (x) values (:x)"), {"x": secret})
    finally:
        runtime.close()
    assert secret not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)

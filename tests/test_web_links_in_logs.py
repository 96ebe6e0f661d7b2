"""A link's token is as good as the link: when a request fails, the log
names the route and a short digest of the token, never the token."""

from __future__ import annotations

import hashlib
import logging

import pytest

from mailflow.domain.statuses import AnswerStatus
from mailflow.web import answering
from tests.support.pages import Web, answer_counts, answer_link, post_form


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

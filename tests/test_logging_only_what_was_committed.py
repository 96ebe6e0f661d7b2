"""A log line says what the database says: an email's `email_sent` line
is written once the transaction recording it has committed, never for a
try whose record rolled back (a failed commit, a batch gone again one at
a time), so a retry does not log the same email twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from mailflow.core import on_commit
from mailflow.core.outgoing import queue_email, record_outgoing_result
from mailflow.core.sending import Outcome, SendPolicy, SendResult

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
POLICY = SendPolicy(retry_base_seconds=60, max_attempts=8)


def sent_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "email_sent"]


def test_an_email_sent_is_logged_once_its_record_commits_and_never_if_it_rolls_back(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailflow")
    email = queue_email(
        session,
        kind="welcome",
        recipient="ann@riverside.example",
        mail_from="alerts@alerts.test",
        raw=b"Subject: hi\r\n\r\nhi\r\n",
        now=NOW,
    )
    session.commit()
    email_id = email.id

    record_outgoing_result(
        session, email, SendResult(Outcome.SENT, "250 ok"), now=NOW, policy=POLICY
    )
    assert sent_lines(caplog) == []  # not yet committed
    session.rollback()
    assert sent_lines(caplog) == []

    email = session.get(type(email), email_id)
    assert email is not None
    record_outgoing_result(
        session, email, SendResult(Outcome.SENT, "250 ok"), now=NOW, policy=POLICY
    )
    session.commit()

    [line] = sent_lines(caplog)
    assert (line.email_id, line.relay_reply) == (email_id, "250 ok")  # type: ignore[attr-defined]


def test_work_asked_for_in_a_savepoint_rolled_back_is_forgotten_and_the_rest_runs(
    session: Session,
) -> None:
    done: list[str] = []
    session.connection()
    on_commit.after_commit(session, lambda: done.append("outer"))
    savepoint = session.begin_nested()
    on_commit.after_commit(session, lambda: done.append("inner"))
    savepoint.rollback()
    kept = session.begin_nested()
    on_commit.after_commit(session, lambda: done.append("kept"))
    kept.commit()
    assert done == []  # a savepoint released is not a commit
    session.commit()
    assert done == ["outer", "kept"]

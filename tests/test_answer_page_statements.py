"""How many statements a status link's page sends to the database: an
upper bound for its GET and its POST, counted with a SQLAlchemy event on
the app's own engines, so the page cannot quietly grow back to reading
the same rows again (it once took 7 for a GET and 32 for a POST)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, select

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import Answer, OutgoingEmail
from tests.support.pages import Web, answer_link, user_id, verified_client

# BEGIN (SQLite only) and one select of the person, the alert, the
# organisations they answer for, the link's use and their app.
GET_STATEMENTS = 2
# The page's read as for a GET, then the write transaction: the verified
# session, the link's single use, the person's rights, the answer and its
# current status, the audit, and the two receipts with their jobs.
POST_STATEMENTS = 19


@contextmanager
def statements_sent(web: Web) -> Iterator[list[str]]:
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()[:6]))

    engines = (web.runtime.engine, web.runtime.reader_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


def test_a_status_links_page_and_its_commit_take_few_statements(web: Web) -> None:
    email = "raj@riverside.example"
    path = answer_link(web.db(), web.settings, email, "RXA", AnswerStatus.COMPLETE)
    client, csrf = verified_client(web, user_id(web.db(), email))
    # Warm: the first request of a process builds what it keeps.
    assert client.get(path).status_code == 200

    with statements_sent(web) as sent:
        page = client.get(path)
    assert page.status_code == 200 and 'name="note"' in page.text
    assert len(sent) <= GET_STATEMENTS, "\n".join(sent)

    with statements_sent(web) as sent:
        done = client.post(
            path, data={"csrf_token": csrf, "note": "Patched"}, follow_redirects=False
        )
    assert done.status_code == 303, done.text
    assert len(sent) <= POST_STATEMENTS, "\n".join(sent)
    # What the statements were for was done.
    db = web.db()
    assert db.scalar(select(sa.func.count()).select_from(Answer)) == 1
    receipts = db.scalars(select(OutgoingEmail.recipient).where(OutgoingEmail.kind == "receipt"))
    assert sorted(receipts) == ["ann@riverside.example", "raj@riverside.example"]

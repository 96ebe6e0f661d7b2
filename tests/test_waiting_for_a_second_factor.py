"""A pending action waits for its own person: it is used once, by them,
with its own token and for its own purpose, before it expires and unless
a newer one replaced it; only its token's digest is kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow.core import pending
from mailflow.core.models import PendingAction
from tests.support.pages import user_id
from tests.support.seed import NOW, seed_people

KIND = "test-kind"
HOUR = timedelta(hours=1)


@pytest.fixture
def people(session: Session) -> dict[str, int]:
    seed_people(session)
    session.commit()
    return {
        "raj": user_id(session, "raj@riverside.example"),
        "li": user_id(session, "li@itservices.example"),
    }


def test_an_action_is_used_once_only_by_its_person_with_its_token_and_purpose(
    session: Session, people: dict[str, int]
) -> None:
    action, token = pending.add(
        session, kind=KIND, user_id=people["raj"], payload={"x": 1}, now=NOW, lifetime=HOUR
    )
    session.commit()

    def use(**changes: object) -> bool:
        args: dict[str, object] = {
            "action_id": action.id,
            "kind": KIND,
            "token": token,
            "user_id": people["raj"],
            "now": NOW,
        } | changes
        return pending.use(session, **args)  # type: ignore[arg-type]

    assert not use(user_id=people["li"])
    assert not use(kind="another-kind")
    assert not use(token=token + "x")
    assert not use(now=NOW + HOUR)
    assert use()
    session.commit()
    assert not use()
    stored = session.scalars(sa.select(PendingAction)).one()
    assert stored.payload == {"x": 1} and stored.used_at == NOW
    assert token not in stored.token_digest and stored.token_digest == pending.token_digest(token)


def test_a_replaced_action_cannot_be_used(session: Session, people: dict[str, int]) -> None:
    older, token = pending.add(
        session, kind=KIND, user_id=people["li"], payload={}, now=NOW, lifetime=HOUR
    )
    pending.supersede([older], now=NOW)
    session.commit()

    assert not pending.use(
        session, action_id=older.id, kind=KIND, token=token, user_id=people["li"], now=NOW
    )
    assert pending.find(session, action_id=older.id, kind=KIND, token=token) is older
    assert pending.find(session, action_id=older.id, kind="another-kind", token=token) is None


def test_a_link_is_used_once_and_a_racing_second_use_fails_in_the_database(
    session: Session, people: dict[str, int]
) -> None:
    assert pending.use_link_once(
        session, kind=pending.ANSWER_LINK_USE, token="t1", user_id=people["raj"], now=NOW
    )
    session.commit()
    assert pending.link_used(session, "t1") and not pending.link_used(session, "t2")
    assert not pending.use_link_once(
        session, kind=pending.ANSWER_LINK_USE, token="t1", user_id=people["raj"], now=NOW
    )
    # A second use that did not see the first (two requests at once) is
    # refused by the unique digest.
    session.add(
        PendingAction(
            kind=pending.ANSWER_LINK_USE,
            user_id=people["raj"],
            payload={},
            token_digest=pending.token_digest("t1"),
            created_at=NOW,
            used_at=NOW,
        )
    )
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()

"""Pending actions: one mechanism for everything that waits for its person
and for every link that commits once.

``add`` makes an action and returns its token (only the digest is kept);
``use`` takes an open action for committing, once, in the caller's
transaction; ``use_link_once`` keeps the single use of a signed link that
names its own expiry.  Each is bound to its kind (the purpose) and to its
person: a token of one kind or of someone else never uses another's
action.  The clock is an argument; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailflow.core.models import PendingAction

# The kinds there are today.  A new kind is a new name here and a module
# that says what it records (see core/pages/commit_flow.py).
REPLY_ANSWERS = "reply-answers"
ANSWER_LINK_USE = "answer-link"
ENROL_LINK_USE = "enrol-link"
# Access and people (mailflow/access/): waiting for their person...
ACCESS_REQUEST = "access-request"  # a request read from an email to access@
ACCESS_DECISION = "access-decision"  # an administrator's reply: APPROVE or DENY
PEOPLE_CHANGES = "people-changes"  # people lines from an email to people@
# ...and the single use of the links that commit one.
ACCESS_NEW_LINK_USE = "access-new-link"
ACCESS_DECIDE_LINK_USE = "access-decide-link"
PEOPLE_LINK_USE = "people-link"
REVIEW_LINK_USE = "review-link"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_action(
    action: PendingAction,
    *,
    kind: str,
    user_id: int,
    now: datetime,
    lifetime: timedelta,
    token: str | None = None,
) -> str:
    """Fill in the pending state of ``action`` (a ``PendingAction`` or a
    kind's own subclass) and return its token."""
    token = token or new_token()
    action.kind = kind
    action.user_id = user_id
    action.token_digest = token_digest(token)
    action.created_at = now
    action.expires_at = now + lifetime
    action.used_at = None
    action.superseded_at = None
    return token


def add(
    session: Session,
    *,
    kind: str,
    user_id: int,
    payload: dict[str, Any],
    now: datetime,
    lifetime: timedelta,
) -> tuple[PendingAction, str]:
    """A new pending action of ``kind`` for this person, and its token."""
    action = PendingAction(payload=dict(payload))
    token = open_action(action, kind=kind, user_id=user_id, now=now, lifetime=lifetime)
    session.add(action)
    session.flush()
    return action, token


def find(session: Session, *, action_id: int, kind: str, token: str) -> PendingAction | None:
    """The action a link names, if the token is its own (compared in
    constant time) and of this kind; None otherwise."""
    action = session.get(PendingAction, action_id)
    if action is None or action.kind != kind:
        return None
    if not hmac.compare_digest(action.token_digest, token_digest(token)):
        return None
    return action


def use(
    session: Session, *, action_id: int, kind: str, token: str, user_id: int, now: datetime
) -> bool:
    """Take an action for committing, once: False when it was used already,
    was replaced, has expired, or is not this kind's, token's or person's.
    One conditional update, so of two racing uses only one finds it open."""
    result = session.execute(
        update(PendingAction)
        .where(
            PendingAction.id == action_id,
            PendingAction.kind == kind,
            PendingAction.token_digest == token_digest(token),
            PendingAction.user_id == user_id,
            PendingAction.used_at.is_(None),
            PendingAction.superseded_at.is_(None),
            PendingAction.expires_at > now,
        )
        .values(used_at=now)
        # An action already loaded in this session sees its new state.
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def supersede(actions: Iterable[PendingAction], *, now: datetime) -> None:
    """Retire open actions a newer one replaces: their links then say so."""
    for action in actions:
        if action.used_at is None:
            action.superseded_at = now


def use_link_once(session: Session, *, kind: str, token: str, user_id: int, now: datetime) -> bool:
    """Keep the single use of a signed link (which carries its own expiry);
    False if it was used before.  One insert that does nothing when the
    digest is there: of two racing uses, the second waits for the first's
    transaction and then finds it (PostgreSQL), or waits its turn for the
    write lock (SQLite)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = session.execute(
        insert(PendingAction)
        .values(
            kind=kind,
            user_id=user_id,
            payload={},
            token_digest=token_digest(token),
            created_at=now,
            expires_at=None,
            used_at=now,
            superseded_at=None,
        )
        .on_conflict_do_nothing(index_elements=["token_digest"])
        .returning(PendingAction.id)
    )
    return result.scalar() is not None


def link_used(session: Session, token: str) -> bool:
    """Whether a signed link has been used."""
    digest = token_digest(token)
    return (
        session.scalar(select(PendingAction.id).where(PendingAction.token_digest == digest))
        is not None
    )


def is_expired(action: PendingAction, now: datetime) -> bool:
    return action.expires_at is not None and action.expires_at <= now

"""Browsers that gave a right second factor a moment ago.

A right code lets the same browser commit again for ``VERIFIED_FOR``
without another.  That state used to live only in the signed session
cookie, so it outlived everything the server knew: a second-factor reset,
signing out (a copied cookie still worked), removing the person.  It is now
a row here, named by the digest of a random key the cookie holds, bound to
the credential it was verified with; committing checks the row, and a
reset, a removal or signing out deletes it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from mailflow.core.models import MfaCredential, User, VerifiedSession

# Long enough to correct a form, or answer for the next organisation.
VERIFIED_FOR = timedelta(minutes=10)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def start_verified_session(session: Session, *, user_id: int, now: datetime) -> str:
    """Record that a browser gave a right second factor for the person
    just now and return the key for its cookie.  Call it in the
    transaction that checked the code."""
    enrolled_at = session.scalar(
        select(MfaCredential.enrolled_at).where(MfaCredential.user_id == user_id)
    )
    if enrolled_at is None:
        raise ValueError(f"user {user_id} has no finished enrolment")
    # The person's lapsed sessions go as a new one starts, so the table
    # holds only a few rows a person.
    session.execute(
        delete(VerifiedSession).where(
            VerifiedSession.user_id == user_id, VerifiedSession.verified_at < now - VERIFIED_FOR
        )
    )
    key = secrets.token_urlsafe(32)
    session.add(
        VerifiedSession(
            key_digest=_digest(key),
            user_id=user_id,
            credential_enrolled_at=enrolled_at,
            verified_at=now,
        )
    )
    session.flush()
    return key


# The record, the credential the person holds now and whether they are
# active, in one statement: it runs in every commit's write transaction.
_HOLDING = (
    select(
        VerifiedSession.user_id,
        VerifiedSession.verified_at,
        VerifiedSession.credential_enrolled_at,
        MfaCredential.enrolled_at,
        User.active,
    )
    .outerjoin(MfaCredential, MfaCredential.user_id == VerifiedSession.user_id)
    .outerjoin(User, User.id == VerifiedSession.user_id)
    .where(VerifiedSession.key_digest == bindparam("digest"))
)


def verified_session_holds(session: Session, *, key: str, user_id: int, now: datetime) -> bool:
    """Whether the browser holding ``key`` gave a right second factor for
    this person within ``VERIFIED_FOR``, with the credential they hold now,
    and the person is still active."""
    row = session.execute(_HOLDING, {"digest": _digest(key)}).first()
    if row is None or row.user_id != user_id:
        return False
    if not timedelta(0) <= now - row.verified_at <= VERIFIED_FOR:
        return False
    return (
        row.enrolled_at is not None
        and row.enrolled_at == row.credential_enrolled_at
        and bool(row.active)
    )


def end_verified_session(session: Session, *, key: str) -> None:
    """Signing out: the key no longer verifies anything, wherever it is copied."""
    session.execute(delete(VerifiedSession).where(VerifiedSession.key_digest == _digest(key)))


def end_verified_sessions(session: Session, *, user_id: int) -> None:
    """Every browser verified for the person must give a code again."""
    session.execute(delete(VerifiedSession).where(VerifiedSession.user_id == user_id))

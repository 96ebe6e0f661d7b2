"""Encrypting every stored TOTP secret anew under the newest secret key,
after a new key is put first in the list (``mailflow keys rotate``).

The work goes in batches, each its own transaction, through the secrets
in the order of their person's id: an interruption loses at most the
batch under way, and a rerun carries on harmlessly, since a secret under
the newest key already is only read, not written.  A person who signs in
meanwhile gets theirs encrypted anew by ``mfa`` itself; the rows of a
batch are locked, so the two never overwrite each other.

Nothing here commits; the caller commits each batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.models import MfaCredential
from mailflow.core.second_factor.secret_encryption import SecretKeys, fernets, reencrypted

DEFAULT_BATCH_SIZE = 500


@dataclass
class SecretCounts:
    """How many stored secrets were under the newest key, under an older
    one (encrypted anew by a rotation), and under none of the keys: those
    people must be reset, or the key they were encrypted under put back."""

    newest: int = 0
    older: int = 0
    unreadable: list[int] = field(default_factory=list)  # their people's ids

    def add(self, other: SecretCounts) -> None:
        self.newest += other.newest
        self.older += other.older
        self.unreadable.extend(other.unreadable)


@dataclass(frozen=True)
class Batch:
    counts: SecretCounts
    last_user_id: int | None  # None: there were no more secrets


def _credentials(
    session: Session, after_user_id: int, batch_size: int, *, lock: bool
) -> list[MfaCredential]:
    query = (
        select(MfaCredential)
        .where(MfaCredential.user_id > after_user_id)
        .order_by(MfaCredential.user_id)
        .limit(batch_size)
    )
    return list(session.scalars(query.with_for_update() if lock else query))


def rotate_batch(
    session: Session,
    *,
    secret_keys: SecretKeys,
    after_user_id: int,
    batch_size: int,
    now: datetime,
    actor: str,
) -> Batch:
    """Encrypt anew under the newest key the secrets of the next
    ``batch_size`` people after ``after_user_id`` that are under an older
    key, and count what was found."""
    counts = SecretCounts()
    rows = _credentials(session, after_user_id, batch_size, lock=True)
    for credential in rows:
        try:
            token = reencrypted(credential.secret_encrypted, secret_keys)
        except InvalidToken:
            counts.unreadable.append(credential.user_id)
            continue
        if token is None:
            counts.newest += 1
        else:
            credential.secret_encrypted = token
            counts.older += 1
    if counts.older:
        record_event(
            session,
            at=now,
            actor=actor,
            action="mfa.secrets_reencrypted",
            subject="mfa",
            count=counts.older,
        )
    session.flush()
    return Batch(counts, rows[-1].user_id if rows else None)


def count_secrets(session: Session, *, secret_keys: SecretKeys, batch_size: int) -> SecretCounts:
    """Under which keys the stored secrets are, reading them a batch at a
    time and changing nothing."""
    keys = fernets(secret_keys)
    counts = SecretCounts()
    after = 0
    while rows := _credentials(session, after, batch_size, lock=False):
        for credential in rows:
            counts.add(_under_which_key(credential, keys))
        after = rows[-1].user_id
        session.expunge_all()
    return counts


def _under_which_key(credential: MfaCredential, keys: list[Fernet]) -> SecretCounts:
    data = credential.secret_encrypted.encode("ascii")
    for place, key in enumerate(keys):
        try:
            key.decrypt(data)
        except InvalidToken:
            continue
        return SecretCounts(newest=1) if place == 0 else SecretCounts(older=1)
    return SecretCounts(unreadable=[credential.user_id])

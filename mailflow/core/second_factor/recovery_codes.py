"""Recovery codes: ten one-off codes a person can use instead of their
authenticator app, made when they enrol and shown to them once.

They are stored only as salted scrypt hashes, each naming its own cost, and
are never logged.  Whether a code is accepted, and what a wrong one costs
the guesser, is decided in ``mfa``; this module only makes, stores and
uses them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from mailflow.core.models import RecoveryCode

RECOVERY_CODE_COUNT = 10
# No 0/o, 1/l/i: nothing that reads as another character.  Twelve of these
# 31 characters make about 59 bits, too many to guess in five tries.
RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
RECOVERY_GROUPS = 3
RECOVERY_GROUP_LENGTH = 4

# scrypt parameters, kept in each stored hash so they can change later
# without making existing codes unusable.  SCRYPT_N is read when a code is
# hashed (not bound at import), so tests can make hashing cheaper.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_LENGTH = 32

_RECOVERY_CODE = re.compile(f"[{RECOVERY_ALPHABET}]{{{RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH}}}")


def looks_like_recovery_code(normalised: str) -> bool:
    """Whether a code, without spaces and dashes and in lower case, has the
    shape of a recovery code (and so is worth hashing)."""
    return _RECOVERY_CODE.fullmatch(normalised) is not None


def _hash_recovery_code(code: str) -> str:
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = hashlib.scrypt(
        code.encode("ascii"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LENGTH
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _recovery_code_matches(code: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        actual = hashlib.scrypt(
            code.encode("ascii"),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _new_recovery_code() -> str:
    return "-".join(
        "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_GROUP_LENGTH))
        for _ in range(RECOVERY_GROUPS)
    )


def replace_recovery_codes(
    session: Session, *, user_id: int, now: datetime, normalise: Callable[[str], str]
) -> list[str]:
    """Delete the person's recovery codes, store a new set and return it in
    plain text, to show once.  ``normalise`` is how a typed code is read,
    so a code is stored as it will be compared."""
    delete_recovery_codes(session, user_id=user_id)
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(
        RecoveryCode(
            user_id=user_id,
            code_hash=_hash_recovery_code(normalise(plain)),
            used_at=None,
            created_at=now,
        )
        for plain in codes
    )
    return codes


def delete_recovery_codes(session: Session, *, user_id: int) -> None:
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


def use_recovery_code(session: Session, user_id: int, code: str, now: datetime) -> bool | None:
    """True if ``code`` is one of the person's unused recovery codes (it is
    now used), False if it is one they used before, None if neither."""
    stored = session.execute(
        select(RecoveryCode.id, RecoveryCode.code_hash, RecoveryCode.used_at)
        .where(RecoveryCode.user_id == user_id)
        # Unused first: a right code is found without hashing the used ones.
        .order_by(RecoveryCode.used_at.is_not(None), RecoveryCode.id)
    ).all()
    for code_id, code_hash, used_at in stored:
        if _recovery_code_matches(code, code_hash):
            if used_at is not None:
                return False
            # Conditional, so that of two requests racing with one code
            # only one marks it used (the other is told it was used).
            marked = session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == code_id, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
            )
            return cast("CursorResult[Any]", marked).rowcount == 1
    return None


def recovery_codes_left(session: Session, user_id: int) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)

"""The second factor: a TOTP authenticator app, with recovery codes beside it.

The TOTP secret is stored encrypted with a key derived from the app's
secret key, so a copy of the database alone cannot produce codes.  Where
a function takes ``secret_key`` it takes one key or every key, newest
first: a secret under an older key still decrypts, and is encrypted anew
under the newest when a code is next checked against it (``mailflow keys
rotate`` does it for all; see ``secret_encryption``).  Recovery codes are
stored only as salted scrypt hashes (see ``recovery_codes``).
Neither secrets nor codes are ever logged or written to the audit log.

Nothing here commits.  A wrong code adds an ``MfaFailure`` row to the session
*before* the error is raised: the caller must commit the session even when
``WrongCode`` or ``LockedOut`` is raised, or the lock-out never comes (how
wrong codes slow the guesser down is in ``mfa_throttle``).

Every wrong code gets the same answer, however close it was: telling a code
a few steps ahead apart as "a clock problem" told a guesser which guesses
would work later, which made guessing about four times easier.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime

import pyotp
from cryptography.fernet import InvalidToken
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.errors import NotFound
from mailflow.core.models import MfaCredential, User
from mailflow.core.second_factor.recovery_codes import (
    delete_recovery_codes,
    looks_like_recovery_code,
    recovery_codes_left,
    replace_recovery_codes,
    use_recovery_code,
)
from mailflow.core.second_factor.secret_encryption import (
    SecretKeys,
    decrypt,
    encrypt,
    reencrypted,
)
from mailflow.core.second_factor.throttle import next_try_at, record_failure
from mailflow.core.second_factor.verified_sessions import end_verified_sessions

# Codes from the step before or after the current one are accepted, for
# clocks a little out and people a little slow; any other is wrong.
DRIFT_STEPS = 1

_TOTP_CODE = re.compile(r"[0-9]{6}")


class MfaError(Exception):
    """A second factor was not accepted.  The message is a sentence fit to
    show the person."""

    default_message = "Your code could not be checked. Try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class NotEnrolled(MfaError):
    default_message = "You have not set up an authenticator app for this account yet."


class WrongCode(MfaError):
    # The same words for every wrong code; the hint about the clock is for
    # everyone, so it says nothing about how close a code was.
    default_message = (
        "That code is not right. Check it and try again with the newest code from your app. "
        "If your codes are often refused, check that your phone sets its time automatically."
    )


class CodeAlreadyUsed(MfaError):
    default_message = (
        "That code has already been used. Wait for your app to show a new code and try again."
    )


RECOVERY_CODE_USED = "That recovery code has already been used. Use another one."


class LockedOut(MfaError):
    """Too many wrong codes from here: no code, even a right one, is
    accepted from this source before ``until``.  ``started`` is True when
    this request's wrong code began the wait (the person is then told by
    email), False when the request came while waiting."""

    def __init__(self, until: datetime, *, started: bool = False) -> None:
        super().__init__(
            f"Too many wrong codes. Wait until {until:%H:%M} UTC on {until:%d %B %Y}, "
            "then try again."
        )
        self.until = until
        self.started = started


def _decrypt(token: str, secret_key: SecretKeys) -> str:
    try:
        return decrypt(token, secret_key)
    except (InvalidToken, ValueError) as exc:
        # The key it was encrypted under was dropped before `mailflow keys
        # rotate` ran, or the row was damaged: not the person's fault, and
        # not a wrong code.
        raise MfaError(
            "Your authenticator app cannot be checked just now. "
            "Use a recovery code, or ask an administrator to reset your second factor."
        ) from exc


def _read_secret(credential: MfaCredential, secret_key: SecretKeys) -> str:
    """The credential's secret; one under an older key is stored anew under
    the newest, so a rotation finishes itself for everyone who signs in."""
    secret = _decrypt(credential.secret_encrypted, secret_key)
    newer = reencrypted(credential.secret_encrypted, secret_key)
    if newer is not None:
        credential.secret_encrypted = newer
    return secret


def _normalise(code: str) -> str:
    # People copy codes with spaces ("123 456") or type recovery codes
    # without their dashes, or in capitals.
    return re.sub(r"[\s\-]", "", code).lower()


def _credential(session: Session, user_id: int) -> MfaCredential | None:
    # Locked for the rest of the transaction, so two requests with the same
    # code cannot both see it unused (a no-op on SQLite, whose writers are
    # serialised anyway).
    return session.scalar(
        select(MfaCredential).where(MfaCredential.user_id == user_id).with_for_update()
    )


def _check_not_locked_out(session: Session, user_id: int, source: str, now: datetime) -> None:
    until = next_try_at(session, user_id=user_id, source=source, now=now)
    if until is not None:
        raise LockedOut(until)


def _fail(session: Session, user_id: int, source: str, now: datetime) -> MfaError:
    """Record a wrong code and return the error to raise: ``WrongCode``, or
    ``LockedOut`` if this one makes the source wait."""
    until = record_failure(session, user_id=user_id, source=source, now=now)
    if until is None:
        return WrongCode()
    record_event(
        session,
        at=now,
        actor=f"user:{user_id}",
        action="mfa.locked_out",
        subject=f"user:{user_id}",
        until=until.isoformat(),
        source=source,
    )
    return LockedOut(until, started=True)


def _check_totp(
    session: Session,
    credential: MfaCredential,
    code: str,
    secret_key: SecretKeys,
    source: str,
    now: datetime,
) -> None:
    """Accept ``code`` for ``credential`` and remember its time step, or raise."""
    totp = pyotp.TOTP(_read_secret(credential, secret_key))
    current = totp.timecode(now)

    def steps_matching(distances: range) -> list[int]:
        steps = sorted({current + sign * d for d in distances for sign in (-1, 1)})
        return [s for s in steps if hmac.compare_digest(totp.generate_otp(s), code)]

    within_drift = steps_matching(range(DRIFT_STEPS + 1))
    last_step = credential.last_step if credential.last_step is not None else -1
    unused = [step for step in within_drift if step > last_step]
    if unused:
        credential.last_step = min(unused)
        return
    if within_drift:
        raise CodeAlreadyUsed()
    raise _fail(session, credential.user_id, source, now)


def start_enrolment(
    session: Session, *, user_id: int, secret_key: SecretKeys, now: datetime
) -> str:
    """Make a new TOTP secret for the person and return it, to show once
    (as a QR code and as text).  It counts only once ``finish_enrolment``
    has seen a code from it."""
    if session.get(User, user_id) is None:
        raise NotFound(f"no user {user_id}")
    credential = _credential(session, user_id)
    if credential is not None and credential.enrolled_at is not None:
        raise MfaError(
            "You have already set up an authenticator app. "
            "Ask an administrator to reset it if you need to set up a new one."
        )
    secret = pyotp.random_base32()
    encrypted = encrypt(secret, secret_key)
    if credential is None:
        session.add(
            MfaCredential(
                user_id=user_id,
                secret_encrypted=encrypted,
                enrolled_at=None,
                last_step=None,
                created_at=now,
            )
        )
    else:
        credential.secret_encrypted = encrypted
        credential.last_step = None
        credential.created_at = now
    session.flush()
    record_event(
        session,
        at=now,
        actor=f"user:{user_id}",
        action="mfa.enrolment_started",
        subject=f"user:{user_id}",
    )
    return secret


def pending_enrolment_secret(
    session: Session, *, user_id: int, secret_key: SecretKeys
) -> str | None:
    """The secret of an enrolment started but not finished, to show its QR
    code again after a wrong first code; None when there is none.  It is
    kept only here, encrypted, never in the browser's session."""
    credential = session.get(MfaCredential, user_id)
    if credential is None or credential.enrolled_at is not None:
        return None
    # Read only: a page shows it again on a GET, which changes nothing.
    return _decrypt(credential.secret_encrypted, secret_key)


def provisioning_uri(secret: str, *, email: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def finish_enrolment(
    session: Session,
    *,
    user_id: int,
    code: str,
    secret_key: SecretKeys,
    now: datetime,
    source: str = "",
) -> list[str]:
    """Check a first code from the new secret, then make the person's
    recovery codes and return them, to show once.  ``source`` is where the
    code came from (see ``mfa_throttle``)."""
    credential = _credential(session, user_id)
    _check_not_locked_out(session, user_id, source, now)
    if credential is None:
        raise NotEnrolled("Start setting up your authenticator app first.")
    if credential.enrolled_at is not None:
        raise MfaError("You have already set up an authenticator app.")
    normalised = _normalise(code)
    if not _TOTP_CODE.fullmatch(normalised):
        raise _fail(session, user_id, source, now)
    _check_totp(session, credential, normalised, secret_key, source, now)
    credential.enrolled_at = now

    codes = replace_recovery_codes(session, user_id=user_id, now=now, normalise=_normalise)
    session.flush()
    record_event(
        session,
        at=now,
        actor=f"user:{user_id}",
        action="mfa.enrolled",
        subject=f"user:{user_id}",
        recovery_codes=len(codes),
    )
    return codes


def is_enrolled(session: Session, user_id: int) -> bool:
    enrolled_at = session.scalar(
        select(MfaCredential.enrolled_at).where(MfaCredential.user_id == user_id)
    )
    return enrolled_at is not None


def verify_second_factor(
    session: Session,
    *,
    user_id: int,
    code: str,
    secret_key: SecretKeys,
    now: datetime,
    source: str = "",
) -> str:
    """Check a code from the person's authenticator app, or one of their
    recovery codes, and return which it was: ``"totp"`` or ``"recovery"``.
    ``source`` says where the code came from (a digest of the client's
    address): wrong codes slow down that source (see ``mfa_throttle``).

    Raises an ``MfaError`` whose message can be shown to the person.  After
    ``WrongCode`` or ``LockedOut`` the session holds the failure: commit it.
    """
    credential = _credential(session, user_id)
    _check_not_locked_out(session, user_id, source, now)
    if credential is None or credential.enrolled_at is None:
        raise NotEnrolled()
    normalised = _normalise(code)
    recovery = (
        use_recovery_code(session, user_id, normalised, now)
        if looks_like_recovery_code(normalised)
        else None
    )
    if _TOTP_CODE.fullmatch(normalised):
        _check_totp(session, credential, normalised, secret_key, source, now)
        method = "totp"
    elif recovery:
        method = "recovery"
    elif recovery is False:
        raise CodeAlreadyUsed(RECOVERY_CODE_USED)
    else:
        raise _fail(session, user_id, source, now)
    session.flush()
    details: dict[str, object] = {"method": method}
    if method == "recovery":
        details["recovery_codes_left"] = recovery_codes_left(session, user_id)
    record_event(
        session,
        at=now,
        actor=f"user:{user_id}",
        action="mfa.verified",
        subject=f"user:{user_id}",
        **details,
    )
    return method


def reset_mfa(session: Session, *, user_id: int, now: datetime, actor: str) -> None:
    """Remove the person's authenticator secret and recovery codes, so they
    can enrol again (an administrator's action, for a lost phone), and end
    every session verified with them."""
    end_verified_sessions(session, user_id=user_id)
    delete_recovery_codes(session, user_id=user_id)
    session.execute(delete(MfaCredential).where(MfaCredential.user_id == user_id))
    session.flush()
    record_event(session, at=now, actor=actor, action="mfa.reset", subject=f"user:{user_id}")

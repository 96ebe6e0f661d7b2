"""The second factor: enrolling an authenticator app, checking its codes and
recovery codes, locking out guessers, and resetting it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.models import AuditEvent, MfaCredential, MfaFailure, RecoveryCode
from mailflow.core.second_factor import mfa, recovery_codes, secret_encryption
from mailflow.people.users import add_user
from tests.support.environment import SECRET_KEY

# On a 30-second step boundary, so "one step later" is unambiguous.
ENROLLED_AT = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
WRONG_CODE = re.escape(mfa.WrongCode.default_message)
FULL_SCRYPT_N = recovery_codes.SCRYPT_N
RECOVERY_FORMAT = re.compile(r"[2-9a-hjkmnp-z]{4}-[2-9a-hjkmnp-z]{4}-[2-9a-hjkmnp-z]{4}")


@pytest.fixture(autouse=True)
def quick_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each stored hash names its own cost, so a cheaper one only makes the
    # tests faster; the first enrolment test puts the real cost back.
    monkeypatch.setattr(recovery_codes, "SCRYPT_N", 2**10)


def new_user(session: Session, email: str = "ola@oversight.example") -> int:
    added = add_user(
        session, email=email, name="Ola Nwosu", role="auditor", org_code=None, now=NOW, actor="test"
    )
    session.commit()
    return added.user.id


def enrol(session: Session, user_id: int) -> tuple[str, list[str]]:
    """Enrol the person an hour before NOW; return their secret and recovery codes."""
    secret = mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=ENROLLED_AT)
    codes = mfa.finish_enrolment(
        session,
        user_id=user_id,
        code=pyotp.TOTP(secret).at(ENROLLED_AT),
        secret_key=SECRET_KEY,
        now=ENROLLED_AT,
    )
    session.commit()
    return secret, codes


def verify(
    session: Session, user_id: int, code: str, *, now: datetime = NOW, key: str = SECRET_KEY
) -> str:
    """What the web page does: check the code, and commit whatever happens,
    so failures are remembered."""
    try:
        return mfa.verify_second_factor(
            session, user_id=user_id, code=code, secret_key=key, now=now
        )
    finally:
        session.commit()


def audit_text(session: Session) -> str:
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    return json.dumps([[e.actor, e.action, e.subject, e.details] for e in events])


# ------------------------------------------------------------------ enrolment


def test_enrolment_keeps_the_secret_encrypted_and_only_hashes_of_recovery_codes(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery_codes, "SCRYPT_N", FULL_SCRYPT_N)
    user_id = new_user(session)

    secret = mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=ENROLLED_AT)
    session.commit()

    credential = session.get(MfaCredential, user_id)
    assert credential is not None
    assert credential.enrolled_at is None
    assert secret not in credential.secret_encrypted
    assert not mfa.is_enrolled(session, user_id)

    codes = mfa.finish_enrolment(
        session,
        user_id=user_id,
        code=pyotp.TOTP(secret).at(ENROLLED_AT),
        secret_key=SECRET_KEY,
        now=ENROLLED_AT,
    )
    session.commit()

    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(RECOVERY_FORMAT.fullmatch(c) for c in codes), codes
    assert mfa.is_enrolled(session, user_id)
    assert recovery_codes.recovery_codes_left(session, user_id) == 10
    session.refresh(credential)
    assert credential.enrolled_at == ENROLLED_AT
    assert credential.last_step == pyotp.TOTP(secret).timecode(ENROLLED_AT)

    hashes = session.scalars(
        select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user_id)
    ).all()
    assert len(hashes) == 10
    assert all(h.startswith(f"scrypt${FULL_SCRYPT_N}$8$1$") for h in hashes), hashes
    for code in codes:
        for stored in hashes:
            assert code not in stored
            assert code.replace("-", "") not in stored

    # Nothing secret reaches the audit log.
    log = audit_text(session)
    assert "mfa.enrolled" in log
    assert secret not in log
    assert not any(c in log or c.replace("-", "") in log for c in codes)


def test_a_wrong_code_at_enrolment_is_refused_and_a_right_one_then_works(
    session: Session,
) -> None:
    user_id = new_user(session)
    secret = mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=ENROLLED_AT)
    right = pyotp.TOTP(secret).at(ENROLLED_AT)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    with pytest.raises(mfa.WrongCode, match=WRONG_CODE):
        mfa.finish_enrolment(
            session, user_id=user_id, code=wrong, secret_key=SECRET_KEY, now=ENROLLED_AT
        )
    session.commit()

    assert not mfa.is_enrolled(session, user_id)
    assert recovery_codes.recovery_codes_left(session, user_id) == 0
    assert len(session.scalars(select(MfaFailure)).all()) == 1

    codes = mfa.finish_enrolment(
        session, user_id=user_id, code=right, secret_key=SECRET_KEY, now=ENROLLED_AT
    )
    assert len(codes) == 10
    assert mfa.is_enrolled(session, user_id)


def test_starting_again_replaces_an_unfinished_enrolment_but_not_a_finished_one(
    session: Session,
) -> None:
    user_id = new_user(session)
    first = mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=ENROLLED_AT)
    second = mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=ENROLLED_AT)
    session.commit()
    assert first != second

    with pytest.raises(mfa.WrongCode):
        mfa.finish_enrolment(
            session,
            user_id=user_id,
            code=pyotp.TOTP(first).at(ENROLLED_AT),
            secret_key=SECRET_KEY,
            now=ENROLLED_AT,
        )
    mfa.finish_enrolment(
        session,
        user_id=user_id,
        code=pyotp.TOTP(second).at(ENROLLED_AT),
        secret_key=SECRET_KEY,
        now=ENROLLED_AT,
    )
    session.commit()

    with pytest.raises(mfa.MfaError, match="already set up"):
        mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=NOW)


def test_finishing_without_starting_is_refused(session: Session) -> None:
    user_id = new_user(session)
    with pytest.raises(mfa.NotEnrolled):
        mfa.finish_enrolment(
            session, user_id=user_id, code="123456", secret_key=SECRET_KEY, now=NOW
        )


def test_the_provisioning_uri_names_the_person_the_issuer_and_the_secret() -> None:
    secret = pyotp.random_base32()
    uri = mfa.provisioning_uri(secret, email="ola@oversight.example", issuer="mailflow")
    assert uri.startswith("otpauth://totp/")
    assert "ola%40oversight.example" in uri
    assert f"secret={secret}" in uri
    assert "issuer=mailflow" in uri


def test_the_encryption_key_is_a_fernet_key_of_its_own_for_each_secret_key() -> None:
    key = secret_encryption.encryption_key(SECRET_KEY)
    assert key == secret_encryption.encryption_key(SECRET_KEY)
    assert key != secret_encryption.encryption_key(SECRET_KEY + "x")
    assert SECRET_KEY.encode() not in key
    token = Fernet(key).encrypt(b"JBSWY3DPEHPK3PXP")
    assert Fernet(key).decrypt(token) == b"JBSWY3DPEHPK3PXP"


# --------------------------------------------------------------- verification


def test_a_right_code_is_accepted_once(session: Session) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    code = pyotp.TOTP(secret).at(NOW)

    assert verify(session, user_id, code) == "totp"
    credential = session.get(MfaCredential, user_id)
    assert credential is not None
    assert credential.last_step == pyotp.TOTP(secret).timecode(NOW)

    with pytest.raises(mfa.CodeAlreadyUsed):
        verify(session, user_id, code)
    # Even a few seconds later, within the same step.
    with pytest.raises(mfa.CodeAlreadyUsed):
        verify(session, user_id, code, now=NOW + timedelta(seconds=20))

    log = audit_text(session)
    assert "mfa.verified" in log
    assert code not in log
    assert secret not in log


def test_a_code_typed_with_a_space_is_accepted(session: Session) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    code = pyotp.TOTP(secret).at(NOW)
    assert verify(session, user_id, f" {code[:3]} {code[3:]} ") == "totp"


@pytest.mark.parametrize("offset", [-1, 1])
def test_a_code_one_step_out_is_accepted(session: Session, offset: int) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    code = pyotp.TOTP(secret).at(NOW, counter_offset=offset)
    assert verify(session, user_id, code) == "totp"


def test_an_earlier_step_is_refused_once_a_later_one_was_used(session: Session) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    totp = pyotp.TOTP(secret)
    assert verify(session, user_id, totp.at(NOW, counter_offset=1)) == "totp"
    with pytest.raises(mfa.CodeAlreadyUsed):
        verify(session, user_id, totp.at(NOW))


@pytest.mark.parametrize("offset", [-2, 2, -10, 10])
def test_a_code_further_out_is_refused_like_any_wrong_code_and_counts_as_a_failure(
    session: Session, offset: int
) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    code = pyotp.TOTP(secret).at(NOW, counter_offset=offset)

    with pytest.raises(mfa.WrongCode) as refused:
        verify(session, user_id, code)
    assert refused.value.message == mfa.WrongCode.default_message
    assert len(session.scalars(select(MfaFailure)).all()) == 1


@pytest.mark.parametrize("garbage", ["hello", "", "12345", "1234567", "<script>"])
def test_garbage_is_a_wrong_code(session: Session, garbage: str) -> None:
    user_id = new_user(session)
    enrol(session, user_id)
    with pytest.raises(mfa.WrongCode, match=WRONG_CODE):
        verify(session, user_id, garbage)


def test_a_code_far_out_of_time_is_just_wrong(session: Session) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    with pytest.raises(mfa.WrongCode):
        verify(session, user_id, pyotp.TOTP(secret).at(NOW + 40 * STEP))


def test_someone_not_enrolled_is_told_so(session: Session) -> None:
    user_id = new_user(session)
    with pytest.raises(mfa.NotEnrolled):
        verify(session, user_id, "123456")

    # Nor does an unfinished enrolment count.
    secret = mfa.start_enrolment(session, user_id=user_id, secret_key=SECRET_KEY, now=NOW)
    with pytest.raises(mfa.NotEnrolled):
        verify(session, user_id, pyotp.TOTP(secret).at(NOW))


# ------------------------------------------------------------------- lock-out


def wrong_code_for(secret: str, now: datetime) -> str:
    """A six-digit code no step near ``now`` produces."""
    totp = pyotp.TOTP(secret)
    near = {totp.at(now, counter_offset=n) for n in range(-10, 11)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)


def fail(session: Session, user_id: int, code: str, at: datetime, source: str) -> mfa.MfaError:
    with pytest.raises(mfa.MfaError) as refused:
        mfa.verify_second_factor(
            session, user_id=user_id, code=code, secret_key=SECRET_KEY, now=at, source=source
        )
    session.commit()
    return refused.value


def test_wrong_codes_from_one_place_make_that_place_wait_longer_each_time(
    session: Session,
) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    totp = pyotp.TOTP(secret)
    wrong = wrong_code_for(secret, NOW)

    for second in range(4):
        refused = fail(session, user_id, wrong, NOW + timedelta(seconds=second), "attacker")
        assert isinstance(refused, mfa.WrongCode)
    fifth = NOW + timedelta(seconds=4)
    locked = fail(session, user_id, wrong, fifth, "attacker")
    assert isinstance(locked, mfa.LockedOut) and locked.started
    assert locked.until == fifth + timedelta(minutes=1)
    assert "Too many wrong codes" in locked.message
    assert "mfa.locked_out" in audit_text(session)

    # While it waits, even a right code from there is refused, and that
    # neither counts nor makes the wait longer.
    waiting = fifth + timedelta(seconds=30)
    still = fail(session, user_id, totp.at(waiting), waiting, "attacker")
    assert isinstance(still, mfa.LockedOut) and not still.started
    assert still.until == locked.until
    assert len(session.scalars(select(MfaFailure)).all()) == 5

    # The owner, elsewhere, is not held up at all.
    assert (
        mfa.verify_second_factor(
            session,
            user_id=user_id,
            code=totp.at(waiting),
            secret_key=SECRET_KEY,
            now=waiting,
            source="owner",
        )
        == "totp"
    )
    session.commit()

    # Each further wrong code from there doubles the wait, up to an hour.
    at = locked.until
    waits = []
    for _ in range(8):
        again = fail(session, user_id, wrong, at, "attacker")
        assert isinstance(again, mfa.LockedOut) and again.started
        waits.append(again.until - at)
        at = again.until
    assert waits == [timedelta(minutes=m) for m in (2, 4, 8, 16, 32, 60, 60, 60)]


def test_wrong_codes_older_than_a_day_do_not_count(session: Session) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    wrong = wrong_code_for(secret, NOW)

    for minute in range(4):
        assert isinstance(
            fail(session, user_id, wrong, NOW + timedelta(minutes=minute), "here"), mfa.WrongCode
        )
    a_day_on = NOW + timedelta(hours=24, minutes=1)
    assert isinstance(fail(session, user_id, wrong, a_day_on, "here"), mfa.WrongCode)


def test_a_hundred_wrong_codes_from_many_places_make_everyone_wait_an_hour(
    session: Session,
) -> None:
    user_id = new_user(session)
    secret, _ = enrol(session, user_id)
    wrong = wrong_code_for(secret, NOW)
    for n in range(99):
        at = NOW + timedelta(seconds=n)
        assert isinstance(fail(session, user_id, wrong, at, f"bot-{n}"), mfa.WrongCode)
    last = NOW + timedelta(seconds=99)
    assert isinstance(fail(session, user_id, wrong, last, "bot-99"), mfa.LockedOut)

    later = last + timedelta(minutes=30)
    refused = fail(session, user_id, pyotp.TOTP(secret).at(later), later, "owner")
    assert isinstance(refused, mfa.LockedOut)
    assert refused.until == last + timedelta(hours=1)


def test_a_recovery_code_counts_as_a_failure_when_wrong_and_is_refused_when_locked_out(
    session: Session,
) -> None:
    user_id = new_user(session)
    secret, codes = enrol(session, user_id)
    wrong = wrong_code_for(secret, NOW)
    for _ in range(4):
        with pytest.raises(mfa.WrongCode):
            verify(session, user_id, wrong)
    with pytest.raises(mfa.LockedOut):
        verify(session, user_id, "2222-2222-2222")
    with pytest.raises(mfa.LockedOut):
        verify(session, user_id, codes[0])
    assert recovery_codes.recovery_codes_left(session, user_id) == 10


# ------------------------------------------------------------- recovery codes


def test_a_recovery_code_works_once_however_it_is_typed(session: Session) -> None:
    user_id = new_user(session)
    _, codes = enrol(session, user_id)
    typed = " " + codes[3].upper().replace("-", " ") + " "

    assert verify(session, user_id, typed) == "recovery"
    assert recovery_codes.recovery_codes_left(session, user_id) == 9
    used = session.scalars(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.isnot(None)
        )
    ).all()
    assert [c.used_at for c in used] == [NOW]

    # Used before: refused, but not a guess, so not counted.
    with pytest.raises(mfa.CodeAlreadyUsed, match="already been used"):
        verify(session, user_id, codes[3])
    assert recovery_codes.recovery_codes_left(session, user_id) == 9
    assert session.scalars(select(MfaFailure)).all() == []

    assert verify(session, user_id, codes[4].replace("-", "")) == "recovery"
    assert recovery_codes.recovery_codes_left(session, user_id) == 8

    log = audit_text(session)
    assert '"method": "recovery"' in log
    assert not any(c in log or c.replace("-", "") in log for c in codes)


# -------------------------------------------------------------- reset and keys


def test_reset_removes_the_secret_and_the_recovery_codes(session: Session) -> None:
    user_id = new_user(session)
    other_id = new_user(session, "sam@castleton.example")
    secret, _ = enrol(session, user_id)
    enrol(session, other_id)

    mfa.reset_mfa(session, user_id=user_id, now=NOW, actor="ann@riverside.example")
    session.commit()

    assert not mfa.is_enrolled(session, user_id)
    assert session.get(MfaCredential, user_id) is None
    assert recovery_codes.recovery_codes_left(session, user_id) == 0
    assert session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user_id)).all() == []
    with pytest.raises(mfa.NotEnrolled):
        verify(session, user_id, pyotp.TOTP(secret).at(NOW))
    assert "mfa.reset" in audit_text(session)

    # Someone else's second factor is untouched.
    assert mfa.is_enrolled(session, other_id)
    assert recovery_codes.recovery_codes_left(session, other_id) == 10

    # And the person can enrol again.
    enrol(session, user_id)
    assert mfa.is_enrolled(session, user_id)


def test_a_different_secret_key_cannot_read_the_secret(session: Session) -> None:
    user_id = new_user(session)
    secret, codes = enrol(session, user_id)

    with pytest.raises(mfa.MfaError) as refused:
        verify(session, user_id, pyotp.TOTP(secret).at(NOW), key="another-secret-key")
    assert "recovery code" in str(refused.value)

    # Recovery codes do not depend on the key, so the person is not stuck.
    assert verify(session, user_id, codes[0], key="another-secret-key") == "recovery"

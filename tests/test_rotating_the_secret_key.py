"""An operator rotates the secret key: puts a new key first in
MAILFLOW_SECRET_KEYS, keeps the old one while links signed with it are
out, runs `mailflow keys rotate`, then drops the old key.  Nobody is
locked out and no link breaks before it should; the rotation survives
being interrupted.  On SQLite and PostgreSQL, through the real pages and
the real command."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pyotp
import pytest
import sqlalchemy as sa
from click.testing import Result
from cryptography.fernet import Fernet, InvalidToken
from httpx2 import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from mailflow.answers.statuses import AnswerStatus
from mailflow.cli import keys_command
from mailflow.config import Settings
from mailflow.core.links import Purpose, TokenInvalid, TokenService
from mailflow.core.models import Answer, MfaCredential, User
from mailflow.core.runtime import Runtime, utc_now
from mailflow.core.second_factor import mfa, secret_encryption
from mailflow.web import create_app
from tests.support.cli import mailflow
from tests.support.environment import SECRET_KEY
from tests.support.pages import BASE, answer_link, csrf_of, enrol, post_form, user_id
from tests.support.seed import PEOPLE, issue, seed_people

KEY_A = SECRET_KEY  # the key everything was made under
KEY_B = "the-new-key-put-first-at-rotation-0123456789-abcdefgh"
KEY_C = "a-key-this-service-never-had-0123456789-abcdefghijklm"
ANN, RAJ, BEA, LI = (
    "ann@riverside.example",
    "raj@riverside.example",
    "bea@brookfield.example",
    "li@itservices.example",
)
ANSWER_LIFETIME = timedelta(days=30)
EVERYONE = sorted({email for email, *_ in PEOPLE})


def with_keys(settings: Settings, *keys: str) -> Settings:
    return dataclasses.replace(settings, secret_key=keys[0], secret_keys=keys)


@contextmanager
def app_under(settings: Settings) -> Iterator[Callable[[], TestClient]]:
    """The web app as a process started with these settings serves it, and
    a way to open a browser on it (one for each person)."""
    runtime = Runtime(settings)
    app = create_app(runtime)
    try:
        with TestClient(app, base_url=BASE):
            yield lambda: TestClient(app, base_url=BASE)
    finally:
        runtime.close()


def keys_command_with(settings: Settings, *args: str) -> Result:
    """`mailflow keys ARGS`, with the keys set as an operator sets them."""
    return mailflow(
        "keys",
        *args,
        database_url=settings.database_url,
        MAILFLOW_SECRET_KEY=None,
        MAILFLOW_SECRET_KEYS=", ".join(settings.secret_keys),
    )


def code(secret: str) -> str:
    return pyotp.TOTP(secret).at(utc_now())


def under_which_key(engine: sa.Engine) -> dict[str, str]:
    """For each stored TOTP secret, its person and the key it opens under."""
    names = {"A": KEY_A, "B": KEY_B, "C": KEY_C}
    with Session(engine) as session:
        rows = session.execute(
            select(User.email, MfaCredential.secret_encrypted).join(
                MfaCredential, MfaCredential.user_id == User.id
            )
        ).all()
    found = {}
    for email, token in rows:
        for name, key in names.items():
            try:
                Fernet(secret_encryption.encryption_key(key)).decrypt(token.encode("ascii"))
            except InvalidToken:
                continue
            found[email] = name
    return found


def recorded(page: Response) -> bool:
    return page.status_code == 200 and page.url.path == "/recorded"


def test_a_rotation_locks_nobody_out_and_breaks_no_link_before_the_old_key_is_dropped(
    settings: Settings, session: Session, engine: sa.Engine, quick_scrypt: None
) -> None:
    # Under key A: people set up their apps (Ann has begun but not
    # finished), and the alert email's links went out.
    seed_people(session)
    issue(session)
    session.commit()
    apps = {email: enrol(session, settings, email) for email in (RAJ, BEA, LI)}
    ann_pending = mfa.start_enrolment(
        session, user_id=user_id(session, ANN), secret_key=KEY_A, now=utc_now()
    )
    session.commit()
    raj_link = answer_link(session, settings, RAJ, "RXA", AnswerStatus.COMPLETE)
    li_old_link = answer_link(session, settings, LI, "RXB", AnswerStatus.COMPLETE)
    with app_under(settings) as browser:
        before = browser()
        opened = before.get(raj_link)  # Raj opens his page before the rotation
        raj_cookies = dict(before.cookies)

    # The new key goes first; the old one stays.
    both = with_keys(settings, KEY_B, KEY_A)
    with app_under(both) as browser:
        client = browser()
        # Raj sends the form he opened before: his link and his session
        # cookie were signed with A, his secret encrypted under A.
        client.cookies.update(raj_cookies)
        sent = client.post(
            raj_link,
            data={"csrf_token": csrf_of(opened.text), "code": code(apps[RAJ])},
            follow_redirects=True,
        )
        assert recorded(sent), sent.text

        # A link made now is signed with B, and A alone does not vouch for it.
        bea_link = answer_link(session, both, BEA, "RXB", AnswerStatus.COMPLETE)
        token = bea_link.removeprefix("/r/")
        assert TokenService(KEY_B, Purpose.ANSWER, ANSWER_LIFETIME).verify(token)
        with pytest.raises(TokenInvalid):
            TokenService(KEY_A, Purpose.ANSWER, ANSWER_LIFETIME).verify(token)
        assert recorded(post_form(browser(), bea_link, {"code": code(apps[BEA])}))

    # Each secret whose code was checked is now under B; the others wait.
    assert under_which_key(engine) == {RAJ: "B", BEA: "B", LI: "A", ANN: "A"}
    status = keys_command_with(both, "status")
    assert status.exit_code == 0, status.stderr
    assert "2 TOTP secrets under the newest key\n2 under an older key" in status.stdout

    rotated = keys_command_with(both, "rotate")

    assert rotated.exit_code == 0, rotated.stderr
    assert rotated.stdout == (
        "encrypted 2 TOTP secrets anew under the newest key; 2 were under it already\n"
    )
    assert under_which_key(engine) == {RAJ: "B", BEA: "B", LI: "B", ANN: "B"}

    # The old key is dropped: links signed with it are refused, and
    # everyone's app still works.
    only_b = with_keys(settings, KEY_B)
    with app_under(only_b) as browser:
        client = browser()
        refused = client.get(li_old_link)
        assert refused.status_code == 400 and "This link is not valid" in refused.text
        li_link = answer_link(session, only_b, LI, "RXC", AnswerStatus.COMPLETE)
        assert recorded(post_form(client, li_link, {"code": code(apps[LI])}))
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Answer)) == 3
    shown_again = mfa.pending_enrolment_secret(
        session, user_id=user_id(session, ANN), secret_key=only_b.secret_keys
    )
    assert shown_again == ann_pending


def enrol_everyone(session: Session, settings: Settings) -> dict[str, str]:
    seed_people(session)
    session.commit()
    return {email: enrol(session, settings, email) for email in EVERYONE}


def readable_secrets(session: Session, keys: tuple[str, ...]) -> dict[str, str]:
    """Each person's TOTP secret that these keys open."""
    session.rollback()
    out = {}
    for email, token in session.execute(
        select(User.email, MfaCredential.secret_encrypted).join(
            MfaCredential, MfaCredential.user_id == User.id
        )
    ):
        try:
            out[email] = secret_encryption.decrypt(token, keys)
        except InvalidToken:
            continue
    return out


def test_a_rotation_interrupted_after_a_batch_carries_on_when_run_again(
    settings: Settings,
    session: Session,
    engine: sa.Engine,
    quick_scrypt: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = enrol_everyone(session, settings)
    assert len(apps) == 8
    both = with_keys(settings, KEY_B, KEY_A)
    real_batch = keys_command.rotate_batch
    calls = []

    def dies_in_the_second_batch(*args: object, **kwargs: object) -> object:
        calls.append(kwargs["after_user_id"])
        done = real_batch(*args, **kwargs)  # type: ignore[arg-type]
        if len(calls) == 2:
            raise RuntimeError("the machine went down")
        return done

    monkeypatch.setattr(keys_command, "rotate_batch", dies_in_the_second_batch)
    interrupted = keys_command_with(both, "rotate", "--batch-size", "3")

    assert interrupted.exit_code != 0
    assert "RuntimeError: the machine went down" in interrupted.stderr
    assert interrupted.stdout == ""

    # The first batch is under B, the second was rolled back whole.
    where = under_which_key(engine)
    assert sorted(where.values()) == ["A"] * 5 + ["B"] * 3
    assert readable_secrets(session, both.secret_keys) == apps

    monkeypatch.setattr(keys_command, "rotate_batch", real_batch)
    again = keys_command_with(both, "rotate", "--batch-size", "3")

    assert again.exit_code == 0, again.stderr
    assert again.stdout == (
        "encrypted 5 TOTP secrets anew under the newest key; 3 were under it already\n"
    )
    assert again.stderr.splitlines() == [
        "3 secrets checked",
        "6 secrets checked",
        "8 secrets checked",
    ]
    assert set(under_which_key(engine).values()) == {"B"}
    assert readable_secrets(session, (KEY_B,)) == apps
    assert readable_secrets(session, (KEY_A,)) == {}


def test_a_secret_no_key_opens_is_named_and_the_others_are_still_rotated(
    settings: Settings, session: Session, engine: sa.Engine, quick_scrypt: None
) -> None:
    apps = enrol_everyone(session, settings)
    lost = session.get(MfaCredential, user_id(session, BEA))
    assert lost is not None
    lost.secret_encrypted = (
        Fernet(secret_encryption.encryption_key(KEY_C)).encrypt(b"JBSWY3DPEHPK3PXP").decode()
    )
    session.commit()

    rotated = keys_command_with(with_keys(settings, KEY_B, KEY_A), "rotate")

    assert rotated.exit_code == 1
    assert rotated.stdout == (
        "encrypted 7 TOTP secrets anew under the newest key; 0 were under it already\n"
    )
    assert rotated.stderr.splitlines()[-1] == (
        f"mailflow: 1 TOTP secrets open under none of the keys ({BEA}): put back the key "
        "they were encrypted under, or reset each with `mailflow users reset-mfa EMAIL`"
    )
    where = under_which_key(engine)
    assert where.pop(BEA) == "C"
    assert set(where.values()) == {"B"}
    del apps[BEA]
    assert readable_secrets(session, (KEY_B,)) == apps

"""Every kind of link an email carries is declared once, and a link sent
before its code moved keeps working: a person who opens last week's alert
email after an upgrade reaches the same page, and the links made now are
the very bytes the earlier code made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.links import ANSWER_LINK, CONFIRM_LINK, ENROL_LINK, LinkSpec
from mailflow.core.models import Delivery, Organisation
from tests.support.environment import SECRET_KEY
from tests.support.pages import Web, user_id

# Tokens signed by the code before links were gathered in one module
# (mail/alert_email.py, mail/replies.py and mail/welcome.py), with the
# test secret, at SIGNED_AT: they must read the same for ever.
SIGNED_AT = datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC)
EARLIER_TOKENS: dict[str, tuple[LinkSpec, dict[str, Any], str]] = {
    "answer": (
        ANSWER_LINK,
        {"d": 7, "u": 3, "a": 2, "o": 5, "s": "complete"},
        "eyJkIjo3LCJ1IjozLCJhIjoyLCJvIjo1LCJzIjoiY29tcGxldGUifQ.av2GwA.gweQcz8N-wzsEkPXrJ7-Wo0NYI8",
    ),
    "confirm": (
        CONFIRM_LINK,
        {"c": 11, "n": "q6Zx1Lm0TfYw", "u": 3},
        "eyJjIjoxMSwibiI6InE2WngxTG0wVGZZdyIsInUiOjN9.av2GwA.7SzTtbSpqbapQ57kc3_mAQOiu_M",
    ),
    "enrol": (
        ENROL_LINK,
        {"u": 3, "n": "bWl4ZWQtbm9uY2Ut", "i": 1794999940},
        "eyJ1IjozLCJuIjoiYldsNFpXUXRibTl1WTJVdCIsImkiOjE3OTQ5OTk5NDB9.av2GwA."
        "bRQcUljbIM_xSFc4AlUZRx8pJZk",
    ),
}
PATHS = {"answer": "/r/", "confirm": "/c/", "enrol": "/enrol/"}


@pytest.fixture
def plain_settings(settings_for: Any, tmp_path: Path) -> Settings:
    made: Settings = settings_for(f"sqlite:///{tmp_path / 'unused.db'}")
    return made


def raw_itsdangerous_token(purpose: str, payload: dict[str, Any], at: datetime) -> str:
    """A token as the earlier code signed it, with nothing of ours but the
    salt: itsdangerous's own serializer and signer, dated ``at``."""
    serializer = URLSafeTimedSerializer(SECRET_KEY, salt=f"mailflow.{purpose}")
    signer = serializer.make_signer()
    signer.get_timestamp = lambda: int(at.timestamp())  # type: ignore[method-assign]
    serializer.make_signer = lambda salt=None: signer  # type: ignore[method-assign]
    return serializer.dumps(payload)


@pytest.mark.parametrize("name", sorted(EARLIER_TOKENS))
def test_a_link_signed_by_the_earlier_code_still_reads_to_its_payload(
    plain_settings: Settings, name: str
) -> None:
    kind, payload, token = EARLIER_TOKENS[name]

    read = links.verify(plain_settings, kind, token, SIGNED_AT + timedelta(days=1))

    assert read == payload


@pytest.mark.parametrize("name", sorted(EARLIER_TOKENS))
def test_a_link_made_now_is_byte_for_byte_the_link_the_earlier_code_made(
    plain_settings: Settings, name: str
) -> None:
    kind, payload, token = EARLIER_TOKENS[name]

    url = links.make(plain_settings, kind, payload, SIGNED_AT)

    assert url == f"https://mailflow.test{PATHS[name]}{token}"
    assert token == raw_itsdangerous_token(name, payload, SIGNED_AT)


def test_a_link_of_one_kind_is_refused_as_any_other(plain_settings: Settings) -> None:
    _, payload, token = EARLIER_TOKENS["answer"]
    later = SIGNED_AT + timedelta(hours=1)

    assert links.verify(plain_settings, ANSWER_LINK, token, later) == payload
    for other in (CONFIRM_LINK, ENROL_LINK):
        with pytest.raises(links.TokenInvalid):
            links.verify(plain_settings, other, token, later)


def test_each_kind_of_link_works_for_its_own_lifetime(settings_for: Any, tmp_path: Path) -> None:
    settings = settings_for(
        f"sqlite:///{tmp_path / 'unused.db'}", answer_link_days=2, confirm_link_hours=3
    )
    lifetimes = {ANSWER_LINK: timedelta(days=2), CONFIRM_LINK: timedelta(hours=3)}
    lifetimes[ENROL_LINK] = timedelta(days=7)

    for kind, lifetime in lifetimes.items():
        url = links.make(settings, kind, {"u": 1}, SIGNED_AT)
        token = url.removeprefix(settings.base_url + kind.path_prefix)
        assert links.verify(settings, kind, token, SIGNED_AT + lifetime) == {"u": 1}
        with pytest.raises(links.TokenExpired):
            links.verify(settings, kind, token, SIGNED_AT + lifetime + timedelta(seconds=1))


def test_a_status_link_signed_the_earlier_way_opens_the_answer_page(web: Web) -> None:
    session = web.db()
    raj = user_id(session, "raj@riverside.example")
    delivery = session.scalars(select(Delivery).where(Delivery.user_id == raj)).one()
    rxa = session.scalars(select(Organisation).where(Organisation.code == "RXA")).one()
    payload = {"d": delivery.id, "u": raj, "a": delivery.alert_id, "o": rxa.id, "s": "complete"}
    token = raw_itsdangerous_token("answer", payload, datetime.now(UTC))

    page = web.client.get(f"/r/{token}")

    assert page.status_code == 200, page.text
    assert "Record your answer to CC-4720" in page.text
    assert AnswerStatus.COMPLETE.label in page.text


@pytest.mark.parametrize(
    "kind", [ANSWER_LINK, CONFIRM_LINK, ENROL_LINK], ids=lambda kind: kind.purpose.value
)
def test_a_tampered_link_of_each_kind_reaches_its_page_and_is_refused(
    web: Web, kind: LinkSpec
) -> None:
    page = web.fresh_client().get(f"{kind.path_prefix}not-a-token")

    assert page.status_code == 400
    assert "not valid" in page.text

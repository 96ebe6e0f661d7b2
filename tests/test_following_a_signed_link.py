"""Signed links and per-delivery addresses: a link in an email works for
its own purpose until it expires, and nothing forged or altered is
accepted; a reply or bounce address names the delivery it belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailflow.core.links import Purpose, TokenExpired, TokenInvalid, TokenService
from mailflow.core.mail.addresses import (
    AddressKind,
    ServiceAddress,
    bounce_address,
    new_key,
    parse_service_address,
    reply_address,
)

SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
WEEK = timedelta(days=7)
PAYLOAD = {"delivery": 42, "organisation": "RXA", "status": "complete"}
DOMAIN = "alerts.example.org"


def whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def signed_between(service: TokenService) -> tuple[str, datetime, datetime]:
    """A token, with the earliest and latest second it can carry as its
    signing time (signing times are whole seconds)."""
    before = whole_seconds(datetime.now(UTC))
    token = service.sign(PAYLOAD)
    after = whole_seconds(datetime.now(UTC))
    return token, before, after


def altered(token: str, at: int) -> str:
    replacement = "A" if token[at] != "A" else "B"
    return token[:at] + replacement + token[at + 1 :]


# ------------------------------------------------------------------ tokens


def test_a_signed_token_verifies_to_its_payload() -> None:
    service = TokenService(SECRET, Purpose.ANSWER, WEEK)

    token = service.sign(PAYLOAD)

    assert service.verify(token) == PAYLOAD
    assert TokenService(SECRET, Purpose.ANSWER, WEEK).verify(token) == PAYLOAD


def test_a_token_made_for_one_purpose_is_refused_for_another() -> None:
    token = TokenService(SECRET, Purpose.ANSWER, WEEK).sign(PAYLOAD)

    for purpose in (Purpose.CONFIRM, Purpose.ENROL):
        with pytest.raises(TokenInvalid):
            TokenService(SECRET, purpose, WEEK).verify(token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = TokenService("another-secret-0123456789-abcdefghijklmn", Purpose.ANSWER, WEEK).sign(
        PAYLOAD
    )

    with pytest.raises(TokenInvalid, match="not valid"):
        TokenService(SECRET, Purpose.ANSWER, WEEK).verify(token)


def test_a_token_with_one_character_changed_is_refused() -> None:
    service = TokenService(SECRET, Purpose.ANSWER, WEEK)
    token = service.sign(PAYLOAD)
    payload_end = token.index(".")

    # In the payload, in the timestamp and in the middle of the signature.
    for at in (0, payload_end // 2, payload_end + 2, len(token) - 10):
        with pytest.raises(TokenInvalid):
            service.verify(altered(token, at))


def test_a_token_cut_short_is_refused() -> None:
    service = TokenService(SECRET, Purpose.CONFIRM, WEEK)
    token = service.sign(PAYLOAD)

    with pytest.raises(TokenInvalid):
        service.verify(token[: len(token) // 2])


def test_a_token_works_until_it_expires() -> None:
    service = TokenService(SECRET, Purpose.ANSWER, WEEK)
    token, before, after = signed_between(service)

    assert service.verify(token, now=before + WEEK - timedelta(seconds=1)) == PAYLOAD
    with pytest.raises(TokenExpired, match="expired"):
        service.verify(token, now=after + WEEK + timedelta(seconds=1))


def test_a_token_dated_in_the_future_is_refused_beyond_a_little_clock_skew() -> None:
    # Only the secret's holder can date a token ahead (a machine whose
    # clock runs fast): it would outlive its lifetime, so it is refused.
    service = TokenService(SECRET, Purpose.ANSWER, WEEK)
    token, before, after = signed_between(service)

    assert service.verify(token, now=before - timedelta(minutes=4)) == PAYLOAD
    with pytest.raises(TokenInvalid, match="dated in the future"):
        service.verify(token, now=after - timedelta(minutes=5, seconds=2))


def test_an_expired_token_is_still_refused_as_invalid_if_it_was_altered() -> None:
    service = TokenService(SECRET, Purpose.ANSWER, WEEK)
    token, _, after = signed_between(service)

    with pytest.raises(TokenInvalid):
        service.verify(altered(token, 0), now=after + WEEK + timedelta(seconds=1))


# --------------------------------------------------------------- addresses


def test_a_reply_address_reads_back_to_its_key() -> None:
    key = new_key()

    address = reply_address(key, DOMAIN)

    assert address == f"reply+{key}@{DOMAIN}"
    assert parse_service_address(address, DOMAIN) == ServiceAddress(AddressKind.REPLY, key)


def test_a_bounce_address_reads_back_to_its_key() -> None:
    key = new_key()

    address = bounce_address(key, DOMAIN)

    assert parse_service_address(f"<{address}>", DOMAIN) == ServiceAddress(AddressKind.BOUNCE, key)


def test_an_address_whose_case_was_changed_in_transit_still_reads() -> None:
    key = new_key()

    address = reply_address(key, DOMAIN).upper()

    assert parse_service_address(address, DOMAIN) == ServiceAddress(AddressKind.REPLY, key)


@pytest.mark.parametrize(
    "address",
    [
        f"reply+{'a' * 32}@elsewhere.example.org",
        f"reply+{'a' * 32}@{DOMAIN}.evil.example",
        f"reply+{'a' * 31}@{DOMAIN}",
        f"reply+{'a' * 33}@{DOMAIN}",
        f"reply+{'a' * 31}1@{DOMAIN}",
        f"reply+{'a' * 31}!@{DOMAIN}",
        f"unsubscribe+{'a' * 32}@{DOMAIN}",
        f"reply{'a' * 32}@{DOMAIN}",
        f"ann.lee@{DOMAIN}",
        "not an address",
    ],
    ids=[
        "other domain",
        "lookalike domain",
        "short key",
        "long key",
        "digit outside base32",
        "punctuation in key",
        "unknown kind",
        "no plus",
        "a person",
        "not an address",
    ],
)
def test_anything_but_one_of_our_addresses_reads_as_none(address: str) -> None:
    assert parse_service_address(address, DOMAIN) is None


def test_new_keys_fit_the_addresses_and_do_not_repeat() -> None:
    keys = {new_key() for _ in range(200)}

    assert len(keys) == 200
    for key in keys:
        assert parse_service_address(reply_address(key, DOMAIN), DOMAIN) is not None

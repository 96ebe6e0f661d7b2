"""Signed tokens for links in emails.

One serializer per purpose (the purpose is the itsdangerous salt), so a
token made for one job is worthless for another.  Every token expires;
those that commit something are also made single-use in the database by
the code that commits.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode


class Purpose(enum.StrEnum):
    ANSWER = "answer"  # /r/TOKEN: one status for one organisation, from an alert email
    CONFIRM = "confirm"  # /c/TOKEN: pending answers from a reply
    ENROL = "enrol"  # MFA enrolment from a welcome email


class TokenError(Exception):
    """The token cannot be used; the message says why in plain words."""


class TokenInvalid(TokenError):
    pass


class TokenExpired(TokenError):
    pass


class _UncompressedSerializer(URLSafeTimedSerializer):
    """Our payloads are a few short fields, which zlib barely shortens; not
    trying saves a third of the cost of a link, and an alert email carries
    four per organisation.  Reading still accepts either form."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(self.serializer.dumps(obj, **self.serializer_kwargs).encode("utf-8"))


# Only the holder of the secret key can sign a token, so one dated in the
# future is not a forgery; but it would outlive its stated lifetime, and
# no machine of ours runs that far ahead, so beyond a little clock skew it
# is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class TokenService:
    def __init__(self, secret_key: str, purpose: Purpose, max_age: timedelta) -> None:
        self._serializer = _UncompressedSerializer(secret_key, salt=f"mailflow.{purpose.value}")
        self.purpose = purpose
        self.max_age = max_age

    def sign(self, payload: dict[str, Any]) -> str:
        return self._serializer.dumps(payload)

    def verify(self, token: str, *, now: datetime | None = None) -> dict[str, Any]:
        """The payload, if the signature is ours for this purpose and the
        token is younger than ``max_age`` at ``now``."""
        try:
            payload, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadSignature as exc:
            raise TokenInvalid(
                "this link is not valid: it may have been changed or cut short"
            ) from exc
        now = now or datetime.now(UTC)
        if now - signed_at > self.max_age:
            raise TokenExpired("this link has expired")
        if signed_at - now > MAX_CLOCK_SKEW:
            raise TokenInvalid("this link is not valid: it is dated in the future")
        if not isinstance(payload, dict):
            raise TokenInvalid("this link is not valid")
        return payload

    def issued_at(self, token: str) -> datetime:
        """When a token that ``verify`` accepted was signed."""
        try:
            _, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadSignature as exc:
            raise TokenInvalid("this link is not valid") from exc
        assert isinstance(signed_at, datetime)
        return signed_at

"""Signed links in emails, each kind declared once: its purpose (the
itsdangerous salt, so a token made for one job is worthless for another),
its path and its lifetime.  Emails make their links here, the web app
builds its routes from the same paths, and the pages check their tokens
here.  Every token expires; those that commit something are also made
single-use in the database by the code that commits.

Tokens are what they were before this module gathered them (same salts,
serializer and payload keys), so links already sent keep working; a test
holds tokens signed by the earlier code.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes

from mailflow.config import Settings


class Purpose(enum.StrEnum):
    ANSWER = "answer"  # /r/TOKEN: one status for one organisation, from an alert email
    CONFIRM = "confirm"  # /c/TOKEN: pending answers from a reply
    ENROL = "enrol"  # MFA enrolment from a welcome email
    ACCESS_NEW = "access-new"  # /access/new/TOKEN: ask for another organisation (in footers)
    ACCESS_CONFIRM = "access-confirm"  # /access/confirm/TOKEN: a request from an email, pending
    ACCESS_DECIDE = "access-decide"  # /access/TOKEN/approve|deny: an administrator's decision
    DECISION_CONFIRM = "decision-confirm"  # /access/decision/TOKEN: a decision from a reply
    PEOPLE = "people"  # /people/TOKEN: an administrator's page of their organisation's people
    PEOPLE_CONFIRM = "people-confirm"  # /people/confirm/TOKEN: people lines from an email
    REVIEW = "review"  # /people/review/TOKEN: the periodic "still right?" of an organisation
    REPORT = "report"  # /report/TOKEN: an auditor's report page, from a digest


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


class _LastVerified(threading.local):
    """The token this thread's service last checked, and when it was signed."""

    token: str | None = None
    signed_at: datetime | None = None


class TokenService:
    """Signs and checks the tokens of one purpose."""

    def __init__(
        self, secret_keys: str | Sequence[str], purpose: Purpose, max_age: timedelta
    ) -> None:
        """``secret_keys``: one key, or several newest first.  The newest
        signs; a token signed with any of them verifies, so links sent
        before a key rotation keep working until they expire."""
        keys = [secret_keys] if isinstance(secret_keys, str) else list(secret_keys)
        # itsdangerous takes the keys oldest first: the last one signs.
        self._serializer = _UncompressedSerializer(keys[::-1], salt=f"mailflow.{purpose.value}")
        self._signer = self._serializer.make_signer()
        self.purpose = purpose
        self.max_age = max_age
        # A page checks its link, then asks when it was signed (once or
        # twice): the signature of the same string is not checked again.
        # Per thread, since a page's work runs in one thread.
        self._last = _LastVerified()

    def sign(self, payload: dict[str, Any], now: datetime | None = None) -> str:
        """The token, dated ``now`` (by default the system clock).

        Dated the way itsdangerous's ``TimestampSigner.sign`` dates it (a
        separator, the whole seconds in URL-safe base64, then the
        signature of both), which reads the system clock itself."""
        if now is None:
            return self._serializer.dumps(payload)
        signed = self._serializer.dump_payload(payload)
        separator = self._signer.sep
        dated = signed + separator + base64_encode(int_to_bytes(int(now.timestamp())))
        return (dated + separator + self._signer.get_signature(dated)).decode("ascii")

    def verify(self, token: str, *, now: datetime | None = None) -> dict[str, Any]:
        """The payload, if the signature is ours for this purpose and the
        token is younger than ``max_age`` at ``now``."""
        try:
            payload, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadSignature as exc:
            raise TokenInvalid(
                "this link is not valid: it may have been changed or cut short"
            ) from exc
        self._last.token, self._last.signed_at = token, signed_at
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
        last = self._last
        if last.token == token and last.signed_at is not None:
            return last.signed_at
        try:
            _, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadSignature as exc:
            raise TokenInvalid("this link is not valid") from exc
        assert isinstance(signed_at, datetime)
        return signed_at


_SERVICES: dict[tuple[Purpose, tuple[str, ...], timedelta], TokenService] = {}


@dataclass(frozen=True)
class LinkSpec:
    """One kind of link: what it is for, where it points, how long it works."""

    purpose: Purpose
    path_prefix: str
    lifetime: Callable[[Settings], timedelta]

    @property
    def route(self) -> str:
        """The web app's route for these links."""
        return self.path_prefix + "{token}"

    def tokens(self, settings: Settings) -> TokenService:
        """The service for these links, made once a process for each set of
        keys and lifetime: every email with links and every page asks for it."""
        lifetime = self.lifetime(settings)
        key = (self.purpose, settings.secret_keys, lifetime)
        service = _SERVICES.get(key)
        if service is None:
            service = _SERVICES.setdefault(
                key, TokenService(settings.secret_keys, self.purpose, lifetime)
            )
        return service

    def url(self, settings: Settings, token: str) -> str:
        return f"{settings.base_url}{self.path_prefix}{token}"


ENROL_LINK_LIFETIME = timedelta(days=7)

ANSWER_LINK = LinkSpec(
    Purpose.ANSWER, "/r/", lambda settings: timedelta(days=settings.answer_link_days)
)
CONFIRM_LINK = LinkSpec(
    Purpose.CONFIRM, "/c/", lambda settings: timedelta(hours=settings.confirm_link_hours)
)
ENROL_LINK = LinkSpec(Purpose.ENROL, "/enrol/", lambda _: ENROL_LINK_LIFETIME)


def _confirm_lifetime(settings: Settings) -> timedelta:
    return timedelta(hours=settings.confirm_link_hours)


def _request_lifetime(settings: Settings) -> timedelta:
    return timedelta(days=settings.access_request_days)


# Access and people (mailflow/access/).  A decision link lives as long as
# the request it decides; a request's confirm link as long as an answer's.
ACCESS_NEW_LINK = LinkSpec(
    Purpose.ACCESS_NEW, "/access/new/", lambda settings: timedelta(days=settings.answer_link_days)
)
ACCESS_CONFIRM_LINK = LinkSpec(Purpose.ACCESS_CONFIRM, "/access/confirm/", _confirm_lifetime)
# Its pages are PATH_PREFIX + TOKEN + "/approve" or "/deny".
ACCESS_DECIDE_LINK = LinkSpec(Purpose.ACCESS_DECIDE, "/access/", _request_lifetime)
DECISION_CONFIRM_LINK = LinkSpec(Purpose.DECISION_CONFIRM, "/access/decision/", _confirm_lifetime)
PEOPLE_LINK = LinkSpec(Purpose.PEOPLE, "/people/", lambda _: timedelta(days=7))
PEOPLE_CONFIRM_LINK = LinkSpec(Purpose.PEOPLE_CONFIRM, "/people/confirm/", _confirm_lifetime)
REVIEW_LINK = LinkSpec(Purpose.REVIEW, "/people/review/", lambda _: timedelta(days=30))
# Auditors' reports (mailflow/reports/): a weekly digest's link still
# works on the day the next one comes.
REPORT_LINK = LinkSpec(Purpose.REPORT, "/report/", lambda _: timedelta(days=8))

LINK_KINDS = (
    ANSWER_LINK,
    CONFIRM_LINK,
    ENROL_LINK,
    ACCESS_NEW_LINK,
    ACCESS_CONFIRM_LINK,
    ACCESS_DECIDE_LINK,
    DECISION_CONFIRM_LINK,
    PEOPLE_LINK,
    PEOPLE_CONFIRM_LINK,
    REVIEW_LINK,
    REPORT_LINK,
)

# Appended to the path of an answer or confirm link: where the page's
# "email me a set-up link" button posts.
SETUP_LINK_SUFFIX = "/setup-link"


def make(settings: Settings, kind: LinkSpec, payload: dict[str, Any], now: datetime) -> str:
    """The whole address of a new link of this kind carrying ``payload``."""
    return kind.url(settings, kind.tokens(settings).sign(payload, now))


def verify(settings: Settings, kind: LinkSpec, token: str, now: datetime) -> dict[str, Any]:
    """The payload of a link of this kind; TokenInvalid or TokenExpired
    when it cannot be used."""
    return kind.tokens(settings).verify(token, now=now)

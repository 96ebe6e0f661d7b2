"""What every page shares for safety: response headers, the signed session
cookie, the CSRF token, how recently the person gave a second factor, where
a request comes from, and what the log may say about a request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import traceback
from datetime import datetime
from typing import Any

import itsdangerous
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailflow.config import Settings
from mailflow.core.second_factor.verified_sessions import VERIFIED_FOR

# The session only carries the CSRF token and the key of the last second
# factor, so it need not outlive a working day.
SESSION_MAX_AGE_SECONDS = 8 * 60 * 60
CSRF_FIELD = "csrf_token"

# No inline script or style anywhere; data: images only for the QR code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def uses_https(settings: Settings) -> bool:
    return settings.base_url.startswith("https://")


def session_cookie_name(settings: Settings) -> str:
    # The __Host- prefix makes browsers refuse the cookie unless it is
    # Secure, has Path=/ and no Domain: no sibling host can plant one.
    return "__Host-mailflow" if uses_https(settings) else "mailflow"


def _session_secret_of(key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"mailflow.web.session", hashlib.sha256).hexdigest()


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: derived from the newest secret
    key with a label of its own, so a session cookie is never a valid link."""
    return _session_secret_of(settings.secret_key)


class SessionCookies(SessionMiddleware):
    """Starlette's signed session cookie, signed with the newest key's
    session secret and still read when signed with an older key's, so a
    key rotation asks nobody for a code again or breaks a form they have
    open."""

    def __init__(self, app: ASGIApp, /, *, settings: Settings, **options: Any) -> None:
        super().__init__(app, secret_key=session_secret(settings), **options)
        # itsdangerous takes the keys oldest first: the last one signs.
        self.signer = itsdangerous.TimestampSigner(
            [_session_secret_of(key) for key in reversed(settings.secret_keys)]
        )


class SecurityHeaders:
    """Adds the security headers to every response, error pages included."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
                if self.https:
                    headers["Strict-Transport-Security"] = "max-age=31536000"
                # Pages carry tokens in their address and show answers,
                # secrets and recovery codes: nothing may be kept.  Only the
                # stylesheet says otherwise.
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, form: dict[str, Any]) -> bool:
    expected = request.session.get("csrf")
    given = form.get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def session_user(request: Request) -> int | None:
    user_id = request.session.get("uid")
    return user_id if isinstance(user_id, int) else None


def is_verified(request: Request, user_id: int, now: datetime) -> bool:
    """True when this session says it gave a right second factor for this
    person within the last ten minutes: whether the page asks for a code.
    The cookie alone proves nothing; committing checks the server's record
    (``verified_session_holds``) before it skips the code."""
    at = request.session.get("verified_at")
    if session_user(request) != user_id or not isinstance(at, int | float):
        return False
    if verified_key(request) is None:
        return False
    return 0 <= now.timestamp() - at <= VERIFIED_FOR.total_seconds()


def verified_key(request: Request) -> str | None:
    """The key of the server's record of this browser's last second factor."""
    key = request.session.get("verified_key")
    return key if isinstance(key, str) and key else None


def mark_verified(request: Request, user_id: int, now: datetime, key: str) -> None:
    """Remember in the cookie the record ``start_verified_session`` made."""
    request.session["uid"] = user_id
    request.session["verified_at"] = now.timestamp()
    request.session["verified_key"] = key


def forget_verified(request: Request) -> None:
    """The server no longer vouches for this browser: ask for a code again."""
    request.session.pop("verified_at", None)
    request.session.pop("verified_key", None)


def client_source(request: Request) -> str:
    """Where a request comes from, for counting wrong codes: a digest of
    the client's address (the proxy's X-Forwarded-For, which uvicorn reads
    when the proxy is local), so the database holds no addresses."""
    host = request.client.host if request.client else ""
    return hashlib.sha256(f"mailflow.source:{host}".encode()).hexdigest()[:16]


def log_digest(value: str) -> str:
    """A short digest of a link token for the log: enough to tell two
    requests apart or find one in a support call, useless as a link."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]


def route_template(request: Request) -> str:
    """The pattern of the route a request matched (``/r/{token}``), never
    the address itself, which holds a link's token."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(no route)"


def token_digests(request: Request) -> dict[str, str]:
    """A short digest of each of the request's path parameters (its link
    token), as log fields: ``token_digest="sha256:1a2b3c4d"``."""
    return {
        f"{name}_digest": f"sha256:{log_digest(str(value))}"
        for name, value in request.path_params.items()
        if str(value)
    }


def describe_failed_request(request: Request, exc: BaseException) -> str:
    """The log line for a request that failed: its method, its route's
    pattern (``/r/{token}``, never the address itself), a digest of each
    path parameter, and the traceback with any parameter's value replaced
    by its digest, since an exception's message may quote it."""
    route = request.scope.get("route")
    pattern = getattr(route, "path", None) or "(no route)"
    params = {k: str(v) for k, v in request.path_params.items() if str(v)}
    digests = " ".join(f"{name}=sha256:{log_digest(value)}" for name, value in params.items())
    trace = "".join(traceback.format_exception(exc))
    # Longest first, so a value that contains another is replaced whole.
    for value in sorted(params.values(), key=len, reverse=True):
        trace = trace.replace(value, f"sha256:{log_digest(value)}")
    return f"error on {request.method} {pattern} {digests}".rstrip() + "\n" + trace

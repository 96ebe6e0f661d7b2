"""The one way the web pages commit anything: in a single transaction,
the second factor (or, without a code, the server's record that this
browser gave one in the last ten minutes with the credential the person
holds now), then the single use of the link and the change itself.

A wrong code is committed on its own (the lock-out counts it, and the
person is emailed when it makes someone wait); a right code is kept even
when the change is then refused, since it has been used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request

from mailflow.core import events, metrics
from mailflow.core.errors import InvalidInput, NotAllowed
from mailflow.core.models import User
from mailflow.core.pages.security import (
    client_source,
    forget_verified,
    mark_verified,
    route_template,
    token_digests,
    verified_key,
)
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.locked_out_email import queue_locked_out_email
from mailflow.core.second_factor.mfa import LockedOut, MfaError, verify_second_factor
from mailflow.core.second_factor.verified_sessions import (
    start_verified_session,
    verified_session_holds,
)

log = logging.getLogger(__name__)

NEEDS_CODE = (
    "Enter the code from your authenticator app: your earlier code no longer counts "
    "(it is more than ten minutes old, you signed out, or your second factor was reset)."
)


@dataclass(frozen=True)
class Committed:
    # What the page after the commit shows (the ids of what was recorded,
    # codes to show once): each kind says.
    result: object = None
    # The log line of the commit (ids only, never what the page shows):
    # a kind that records more than "committed" names its event and ids.
    event: str = "committed"
    event_fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class AlreadyUsed:
    pass


@dataclass(frozen=True)
class CodeRefused:
    message: str
    locked_out: bool


@dataclass(frozen=True)
class Refused:
    message: str


@dataclass(frozen=True)
class Invalid:
    field: str
    problem: str


Outcome = Committed | AlreadyUsed | CodeRefused | Refused | Invalid


class _Undo(Exception):
    """Raised inside the savepoint to roll back the change but keep the code."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


# Checks a code for a person in the caller's transaction, raising MfaError
# when it is wrong (the default checks their authenticator app).
CodeCheck = Callable[[Session, str, str], None]


def commit_with_second_factor(
    runtime: Runtime,
    request: Request,
    *,
    user_id: int,
    code: str | None,
    now: datetime,
    change: Callable[[Session], Outcome],
    check_code: CodeCheck | None = None,
) -> Outcome:
    """Run ``change`` after the second factor, all in one transaction.

    ``code`` is None when the session is already verified for this person.
    ``change`` returns ``AlreadyUsed`` (the link was used: nothing of it is
    kept) or ``Committed``; the domain's refusals undo it too.
    ``check_code(session, code, source)`` replaces the check of the
    person's app (setting one up checks the first code of the new app).
    """
    new_key: str | None = None
    try:
        with runtime.sessions.begin() as session:
            if code is None:
                key = verified_key(request)
                if key is None or not verified_session_holds(
                    session, key=key, user_id=user_id, now=now
                ):
                    forget_verified(request)
                    return CodeRefused(NEEDS_CODE, locked_out=False)
            else:
                refused = _check_code(runtime, request, session, user_id, code, now, check_code)
                if refused is not None:
                    # Committed as it is: the failure counts towards the lock-out.
                    return refused
                new_key = start_verified_session(session, user_id=user_id, now=now)
            try:
                with session.begin_nested():
                    outcome = change(session)
                    if not isinstance(outcome, Committed):
                        raise _Undo(outcome)
                    metrics.count_on_commit(session, metrics.CONFIRMATIONS_COMMITTED)
            except _Undo as undo:
                outcome = undo.outcome
            except NotAllowed as exc:
                outcome = Refused(str(exc))
            except InvalidInput as exc:
                outcome = Invalid(exc.where, exc.problem)
    except IntegrityError:
        # Two requests raced with one link: the other one committed first.
        outcome = AlreadyUsed()
        new_key = None
    if new_key is not None:
        mark_verified(request, user_id, now, new_key)
    _log_outcome(request, user_id, outcome)
    return outcome


def _log_outcome(request: Request, user_id: int, outcome: Outcome) -> None:
    """The log line of a commit, or of a code refused, once the
    transaction has ended."""
    route = route_template(request)
    if isinstance(outcome, Committed):
        events.committed(outcome.event, user_id=user_id, route=route, **outcome.event_fields)
    elif isinstance(outcome, CodeRefused):
        reason = "locked out" if outcome.locked_out else "code refused"
        reason = "code needed" if outcome.message == NEEDS_CODE else reason
        events.refused(reason, via="web", route=route, user_id=user_id, **token_digests(request))


def _check_code(
    runtime: Runtime,
    request: Request,
    session: Session,
    user_id: int,
    code: str,
    now: datetime,
    check_code: CodeCheck | None,
) -> CodeRefused | None:
    """Check the code in the caller's transaction; a refusal to show, or
    None.  When a wrong code makes its source wait, the person is told."""
    source = client_source(request)
    try:
        if check_code is not None:
            check_code(session, code, source)
        else:
            verify_second_factor(
                session,
                user_id=user_id,
                code=code,
                secret_key=runtime.settings.secret_keys,
                now=now,
                source=source,
            )
    except LockedOut as exc:
        if exc.started:
            warn_locked_out(runtime, session, user_id, exc, now)
        return CodeRefused(exc.message, locked_out=True)
    except MfaError as exc:
        return CodeRefused(exc.message, locked_out=False)
    return None


def warn_locked_out(
    runtime: Runtime, session: Session, user_id: int, locked: LockedOut, now: datetime
) -> None:
    """Email the person that wrong codes made someone wait (at most one an
    hour).  In a savepoint of its own: the wrong code is recorded in the
    same transaction, and a failure to write the warning must never undo
    that record (it would let a guesser go on without waiting)."""
    try:
        with session.begin_nested():
            queue_locked_out_email(
                session,
                runtime.settings,
                user=session.get_one(User, user_id),
                until=locked.until,
                now=now,
            )
    except Exception:
        log.exception("could not queue the locked-out warning to user %s", user_id)

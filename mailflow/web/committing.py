"""The one way the web pages commit anything: in a single transaction,
the second factor (unless the session gave one in the last ten minutes),
then the single use of the link and the change itself.

A wrong code is committed on its own (the lock-out counts it); a right code
is kept even when the change is then refused, since it has been used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request

from mailflow.domain.answers import AccessRefused
from mailflow.domain.errors import InvalidInput
from mailflow.domain.mfa import LockedOut, MfaError, verify_second_factor
from mailflow.web.security import mark_verified
from mailflow.workers.runtime import Runtime


@dataclass(frozen=True)
class Committed:
    answer_ids: list[int]


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


def commit_with_second_factor(
    runtime: Runtime,
    request: Request,
    *,
    user_id: int,
    code: str | None,
    now: datetime,
    change: Callable[[Session], Outcome],
) -> Outcome:
    """Run ``change`` after the second factor, all in one transaction.

    ``code`` is None when the session is already verified for this person.
    ``change`` returns ``AlreadyUsed`` (the link was used: nothing of it is
    kept) or ``Committed``; the domain's refusals undo it too.
    """
    verified = False
    try:
        with runtime.sessions.begin() as session:
            if code is not None:
                try:
                    verify_second_factor(
                        session,
                        user_id=user_id,
                        code=code,
                        secret_key=runtime.settings.secret_key,
                        now=now,
                    )
                except MfaError as exc:
                    # Committed as it is: the failure counts towards the lock-out.
                    return CodeRefused(exc.message, isinstance(exc, LockedOut))
            verified = True
            try:
                with session.begin_nested():
                    outcome = change(session)
                    if not isinstance(outcome, Committed):
                        raise _Undo(outcome)
            except _Undo as undo:
                outcome = undo.outcome
            except AccessRefused as exc:
                outcome = Refused(str(exc))
            except InvalidInput as exc:
                outcome = Invalid(exc.where, exc.problem)
    except IntegrityError:
        # Two requests raced with one link: the other one committed first.
        outcome = AlreadyUsed()
    if verified:
        mark_verified(request, user_id, now)
    return outcome

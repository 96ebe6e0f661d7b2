"""Deciding a confirmed access request: an administrator of the
organisation (or the service desk's operator) approves or denies it.

The first committed decision is the only one: the decision is one
conditional update from ``open``, so of two decisions committed at the
same moment (on PostgreSQL, one waits for the other's row lock and then
finds it no longer open) exactly one changes the request.  An approval
gives the requester the responder role at the organisation, recorded
with who approved it.  No I/O; the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.errors import NotAllowed, NotFound
from mailflow.core.models import (
    AccessRequest,
    AccessState,
    Membership,
    Organisation,
    Role,
    User,
)

MAX_DECISION_REASON = 1000

# Stronger roles first: an approval never weakens a role already held.
_STRENGTH = {Role.ADMINISTRATOR: 3, Role.RESPONDER: 2, Role.ALERT_ONLY: 1}


@dataclass(frozen=True)
class Decider:
    """Who decides: an administrator (``user_id``) or, from the command
    line, the service desk's operator (``operator``, e.g. "cli:jo")."""

    user_id: int | None = None
    operator: str | None = None

    @property
    def actor(self) -> str:
        return self.operator if self.operator else f"user:{self.user_id}"


class AlreadyDecided(NotAllowed):
    """The request was decided (or expired) before this decision: who
    decided it and when, for the person who came second."""

    def __init__(self, request: AccessRequest, decided_by: str) -> None:
        self.state = request.state
        self.decided_by = decided_by
        self.decided_at = request.decided_at
        super().__init__(f"this request was already {request.state.value} by {decided_by}")


@dataclass(frozen=True)
class Decision:
    request: AccessRequest
    approved: bool
    # The membership the approval created or strengthened; None when the
    # requester already held an equal or stronger role (or on a denial).
    granted: Membership | None


def decided_by_name(session: Session, request: AccessRequest) -> str:
    """Who decided a request, as people read it."""
    if request.decided_by_id is not None:
        user = session.get_one(User, request.decided_by_id)
        return f"{user.name} ({user.email})"
    if request.decided_by_operator:
        return "the service desk"
    return "nobody (it expired)" if request.state is AccessState.EXPIRED else "nobody"


def is_active_administrator(session: Session, *, user_id: int, organisation_id: int) -> bool:
    found = session.scalar(
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(
            Membership.user_id == user_id,
            Membership.organisation_id == organisation_id,
            Membership.role == Role.ADMINISTRATOR,
            User.active.is_(True),
        )
    )
    return found is not None


def check_may_decide(session: Session, request: AccessRequest, decider: Decider) -> None:
    """Refuse (``NotAllowed``) a decider who may not decide this request."""
    if decider.operator is not None:
        return
    if decider.user_id is None:
        raise NotAllowed("no one was named to decide")
    if decider.user_id == request.requester_id:
        raise NotAllowed("you cannot decide your own request")
    if not is_active_administrator(
        session, user_id=decider.user_id, organisation_id=request.organisation_id
    ):
        raise NotAllowed("you are not an administrator of this organisation")


def decide(
    session: Session,
    *,
    request_id: int,
    decider: Decider,
    approve: bool,
    reason: str,
    via: str,
    now: datetime,
) -> Decision:
    """Decide an open request in the caller's transaction, or raise:
    ``NotFound`` (no such request), ``NotAllowed`` (not this decider's to
    decide) or ``AlreadyDecided`` (someone else was first)."""
    request = session.get(AccessRequest, request_id)
    if request is None:
        raise NotFound(f"no access request {request_id}")
    check_may_decide(session, request, decider)
    requester = session.get_one(User, request.requester_id)
    if approve and not requester.active:
        raise NotAllowed("the person who asked no longer has access to this service")
    if approve and not session.get_one(Organisation, request.organisation_id).is_open:
        raise NotAllowed("the organisation has closed since the request was made")
    state = AccessState.APPROVED if approve else AccessState.DENIED
    result = session.execute(
        update(AccessRequest)
        .where(
            AccessRequest.id == request_id,
            AccessRequest.state == AccessState.OPEN,
            # Past its time it is decided by no one, even before the
            # periodic pass marks it expired.
            AccessRequest.expires_at > now,
        )
        .values(
            state=state,
            decided_at=now,
            decided_by_id=decider.user_id,
            decided_by_operator=decider.operator,
            decided_via=via,
            decision_reason=reason.strip()[:MAX_DECISION_REASON] or None,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(request)
    if not result.rowcount:  # type: ignore[attr-defined]
        if request.state is AccessState.OPEN:
            raise NotAllowed("this request has expired: it can no longer be decided")
        raise AlreadyDecided(request, decided_by_name(session, request))
    record_event(
        session,
        at=now,
        actor=decider.actor,
        action=f"access.{state.value}",
        subject=f"access_request:{request.id}",
        requester=f"user:{request.requester_id}",
        organisation_id=request.organisation_id,
        via=via,
        reason=request.decision_reason,
    )
    granted = _grant(session, request, decider, now) if approve else None
    return Decision(request, approve, granted)


def _grant(
    session: Session, request: AccessRequest, decider: Decider, now: datetime
) -> Membership | None:
    """Give the requester the responder role there, keeping a stronger
    role they already hold."""
    membership = session.scalar(
        select(Membership).where(
            Membership.user_id == request.requester_id,
            Membership.organisation_id == request.organisation_id,
        )
    )
    if membership is not None and _STRENGTH[membership.role] >= _STRENGTH[Role.RESPONDER]:
        return None
    if membership is None:
        membership = Membership(
            user_id=request.requester_id,
            organisation_id=request.organisation_id,
            role=Role.RESPONDER,
            created_at=now,
        )
        session.add(membership)
    membership.role = Role.RESPONDER
    membership.granted_by_id = decider.user_id
    membership.access_request_id = request.id
    session.flush()
    record_event(
        session,
        at=now,
        actor=decider.actor,
        action="user.role_granted",
        subject=f"user:{request.requester_id}",
        role=Role.RESPONDER.value,
        organisation_id=request.organisation_id,
        access_request=request.id,
    )
    return membership

"""The life of one alert email: queued, claimed by a sender, then sent,
deferred for a retry, failed, or (later) bounced."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from mailflow.core import metrics
from mailflow.core.audit import record_event
from mailflow.core.leases import renew_lease
from mailflow.core.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Membership,
    OutgoingEmail,
    Role,
    User,
)
from mailflow.core.sending import NextState, Outcome, SendPolicy, SendResult, Step, next_state

SENDER = "worker"


def _due_ids(session: Session, alert_id: int, now: datetime, limit: int) -> list[int]:
    """Ids of due deliveries: queued or deferred whose time has come, then
    those a sender that died was holding (its hold has run out).  Two
    queries, each answered from the (alert_id, state, next_attempt_at)
    index, rather than one OR that reads every delivery of the alert."""
    locking = session.get_bind().dialect.name == "postgresql"
    ids: list[int] = []
    for query in (
        select(Delivery.id).where(
            Delivery.alert_id == alert_id,
            Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]),
            Delivery.next_attempt_at <= now,
        ),
        select(Delivery.id).where(
            Delivery.alert_id == alert_id,
            Delivery.state == DeliveryState.SENDING,
            Delivery.claimed_until < now,
        ),
    ):
        if len(ids) >= limit:
            break
        query = query.limit(limit - len(ids))
        if locking:
            query = query.with_for_update(skip_locked=True)
        ids.extend(session.scalars(query))
    return ids


@dataclass(frozen=True)
class ClaimedDelivery:
    """What a sender needs to compose and record one delivery: plain
    values, loaded in two queries per batch rather than as ORM objects."""

    id: int
    user_id: int
    attempts: int
    message_id: str
    reply_key: str
    bounce_key: str
    recipient_name: str
    recipient_email: str
    # The recipient's role at each organisation they hold one for.
    roles: dict[int, Role]


def describe_deliveries(session: Session, ids: list[int]) -> list[ClaimedDelivery]:
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.user_id,
            Delivery.attempts,
            Delivery.message_id,
            Delivery.reply_key,
            Delivery.bounce_key,
            User.name,
            User.email,
        )
        .join(User, User.id == Delivery.user_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    ).all()
    roles: dict[int, dict[int, Role]] = defaultdict(dict)
    for user_id, org_id, role in session.execute(
        select(Membership.user_id, Membership.organisation_id, Membership.role).where(
            Membership.user_id.in_({row.user_id for row in rows})
        )
    ):
        roles[user_id][org_id] = Role(role)
    return [ClaimedDelivery(*row, roles=roles[row.user_id]) for row in rows]


def claim_due_deliveries(
    session: Session, *, alert_id: int, now: datetime, hold: timedelta, limit: int
) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries of an alert for sending.  The
    caller commits at once, so two senders never hold the same delivery."""
    ids = _due_ids(session, alert_id, now, limit)
    if not ids:
        return []
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids))
        .values(
            state=DeliveryState.SENDING,
            claimed_until=now + hold,
            attempts=Delivery.attempts + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return describe_deliveries(session, ids)


def renew_claims(session: Session, ids: Collection[int], *, now: datetime, hold: timedelta) -> int:
    """A live sender's heartbeat: hold the deliveries it still has in
    flight for another ``hold``, in one UPDATE.  One whose outcome is
    recorded (no longer sending) or whose hold already ran out is left
    alone.  Returns how many were renewed."""
    return renew_lease(
        session,
        Delivery.claimed_until,
        ids,
        still_held=Delivery.state == DeliveryState.SENDING,
        now=now,
        until=now + hold,
    )


def _finish_sending(session: Session, delivery_id: int, now: datetime, **values: object) -> bool:
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.SENDING)
        .values(claimed_until=None, updated_at=now, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_outcomes(
    session: Session,
    outcomes: Sequence[tuple[ClaimedDelivery, SendResult]],
    *,
    now: datetime,
    policy: SendPolicy,
) -> list[NextState | None]:
    """Record what became of each delivery sent together: those the relay
    took in one statement, each other one in its own.  Returns the state
    each is left in, in the order given, or None for one not recorded
    (its hold ran out and another sender has taken it since)."""
    sent = _record_sent(
        session,
        {d.id: r.reply for d, r in outcomes if r.outcome is Outcome.SENT},
        now=now,
    )
    states: list[NextState | None] = []
    for delivery, result in outcomes:
        state = next_state(result, attempts=delivery.attempts, now=now, policy=policy)
        if state.step is Step.SENT:
            recorded = delivery.id in sent
        else:
            recorded = _record_unsent(session, delivery.id, state, now=now)
        states.append(state if recorded else None)
    return states


def _record_sent(session: Session, replies: dict[int, str], *, now: datetime) -> set[int]:
    """Mark deliveries sent, with the relay's reply to each, in one
    statement: fan-out records whatever finished together in one commit.
    Returns those marked (not one another sender had taken)."""
    if not replies:
        return set()
    changed = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(list(replies)), Delivery.state == DeliveryState.SENDING)
        .values(
            state=DeliveryState.SENT,
            sent_at=now,
            last_error=None,
            claimed_until=None,
            updated_at=now,
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    metrics.email_tried(session, Step.SENT, "alert", len(changed))
    if changed:
        session.execute(
            insert(AuditEvent),
            [
                {
                    "at": now,
                    "actor": SENDER,
                    "action": "delivery.sent",
                    "subject": f"delivery:{delivery_id}",
                    "details": {"relay_reply": replies[delivery_id]},
                }
                for delivery_id in changed
            ],
        )
    return set(changed)


def _record_unsent(session: Session, delivery_id: int, state: NextState, *, now: datetime) -> bool:
    """A delivery deferred (with when to try again) or failed, unless its
    hold ran out and another sender has taken it since (then False)."""
    values: dict[str, object] = {"state": DeliveryState(state.step), "last_error": state.error}
    details: dict[str, object] = {"error": state.error}
    if state.next_attempt_at is not None:
        values["next_attempt_at"] = state.next_attempt_at
        details["next_attempt_at"] = state.next_attempt_at.isoformat()
    if _finish_sending(session, delivery_id, now, **values):
        metrics.email_tried(session, state.step, "alert")
        record_event(
            session,
            at=now,
            actor=SENDER,
            action=f"delivery.{state.step}",
            subject=f"delivery:{delivery_id}",
            **details,
        )
        return True
    return False


def next_due_time(session: Session, *, alert_id: int) -> datetime | None:
    """When a delivery of this alert next needs a sender: the earliest
    retry, or the end of a hold on a delivery some sender has taken.
    None when every delivery has reached an end state."""
    retry = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.alert_id == alert_id,
            Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]),
        )
    )
    held = session.scalar(
        select(func.min(Delivery.claimed_until)).where(
            Delivery.alert_id == alert_id, Delivery.state == DeliveryState.SENDING
        )
    )
    times = [t for t in (retry, held) if t is not None]
    return min(times) if times else None


def count_by_state(session: Session, *, alert_id: int) -> Counter[str]:
    rows = session.execute(
        select(Delivery.state, func.count())
        .where(Delivery.alert_id == alert_id)
        .group_by(Delivery.state)
    ).all()
    return Counter({str(state): n for state, n in rows})


def record_bounce(
    session: Session, *, bounce_key: str, description: str, now: datetime
) -> Delivery | None:
    """Mark the delivery a bounce names as bounced, with what the report
    said.  None when the key names no delivery."""
    delivery = session.scalar(select(Delivery).where(Delivery.bounce_key == bounce_key))
    if delivery is None:
        return None
    if delivery.state is not DeliveryState.BOUNCED:
        metrics.email_bounced(session, "alert")
    delivery.state = DeliveryState.BOUNCED
    delivery.last_error = description
    delivery.claimed_until = None
    delivery.updated_at = now
    record_event(
        session,
        at=now,
        actor="inbound",
        action="delivery.bounced",
        subject=f"delivery:{delivery.id}",
        report=description,
    )
    return delivery


# A bounce comes at most about five days after a relay took the email (the
# give-up time RFC 5321 section 4.5.4.1 suggests), and our own retries end
# within a day of issuing; two weeks is ample, and after that a message to
# the bounce address can only be junk.
BOUNCE_KEY_LIFETIME = timedelta(days=14)


def bounce_key_in_use(session: Session, key: str, *, now: datetime) -> bool:
    """Whether ``key`` is the bounce key of an alert email or of a one-off
    email (a welcome, a receipt) sent recently enough for a bounce about
    it to come."""
    since = now - BOUNCE_KEY_LIFETIME
    found = session.scalar(
        select(Delivery.id).where(Delivery.bounce_key == key, Delivery.created_at >= since)
    )
    if found is None:
        found = session.scalar(
            select(OutgoingEmail.id).where(
                OutgoingEmail.bounce_key == key, OutgoingEmail.created_at >= since
            )
        )
    return found is not None

"""Access to organisations: requests to answer for another organisation
and their decisions, the reply keys of the emails administrators decide
from, and administrators' reviews of who answers for their organisation."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailflow.core.models.base import Base, text_enum


class AccessState(enum.StrEnum):
    """Where a confirmed request stands.  Only an open request can be
    decided; the conditional update from ``open`` makes the first committed
    decision the only one."""

    OPEN = "open"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    # The requester was removed, or lost the right to ask, before a decision.
    WITHDRAWN = "withdrawn"


class AccessRequest(Base):
    """A person's confirmed request to answer for one organisation.

    A request by email or on the page is a pending action until its person
    confirms it with their second factor; only then is it a row here, sent
    to the organisation's administrators."""

    __tablename__ = "access_requests"
    __table_args__ = (
        Index("ix_access_requests_organisation_id_state", "organisation_id", "state"),
        Index("ix_access_requests_requester_id_state", "requester_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    # How it was asked for: "email", "web" or "cli" (the service desk).
    via: Mapped[str] = mapped_column(String(10))
    state: Mapped[AccessState] = mapped_column(text_enum(AccessState, "access_state"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # The one reminder to the administrators; set in the transaction that
    # queues it, so it is sent once.
    reminded_at: Mapped[datetime | None]
    # No active administrator: the request went to MAILFLOW_SERVICE_DESK.
    to_service_desk: Mapped[bool] = mapped_column(default=False)
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The operator who decided with `mailflow access approve|deny`.
    decided_by_operator: Mapped[str | None] = mapped_column(String(100))
    # "link", "reply", "cli": how the decision was made.
    decided_via: Mapped[str | None] = mapped_column(String(10))
    decision_reason: Mapped[str | None] = mapped_column(Text)


class AccessDecisionKey(Base):
    """The reply key of one administrator's email about one request: a
    reply to it is that administrator's decision on that request only."""

    __tablename__ = "access_decision_keys"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]


class PeopleKey(Base):
    """The reply key of an email to an administrator about their people
    (a LIST answer, a confirmation, a review): a reply to it is read as
    people lines from that administrator."""

    __tablename__ = "people_keys"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The organisation the email was about, if one: lines without a code
    # are for it.
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    created_at: Mapped[datetime]


class AccessReview(Base):
    """One round of "these people can answer for ORG: still right?" to
    one administrator.  ``round`` counts review periods since the epoch,
    and the unique key makes each round's email go once."""

    __tablename__ = "access_reviews"
    __table_args__ = (UniqueConstraint("organisation_id", "administrator_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    administrator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    round: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime]
    reviewed_at: Mapped[datetime | None]

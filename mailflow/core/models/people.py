"""Who is who: organisations, people and their roles, and each person's
second factor (authenticator, recovery codes, wrong codes, verified
browsers)."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailflow.core.models.base import Base, text_enum
from mailflow.core.models.digests import DigestSchedule


class Role(enum.StrEnum):
    """What a person may do for one organisation."""

    ADMINISTRATOR = "administrator"
    RESPONDER = "responder"
    ALERT_ONLY = "alert-only"

    @property
    def can_answer(self) -> bool:
        return self is not Role.ALERT_ONLY


class NationalRole(enum.StrEnum):
    """Roles held nationally rather than for an organisation."""

    AUDITOR = "auditor"


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(40))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    opened_on: Mapped[date | None] = mapped_column(Date)
    # Indexed: reports leave out the few organisations closed by a date.
    closed_on: Mapped[date | None] = mapped_column(Date, index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    parent: Mapped[Organisation | None] = relationship(remote_side=[id])

    @property
    def is_open(self) -> bool:
        return self.closed_on is None


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased: mail systems treat the domain, and in practice the
    # local part, without regard to case, and a reply's From must match.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    national_role: Mapped[NationalRole | None] = mapped_column(
        text_enum(NationalRole, "national_role")
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # Links signed before this (set when the person is removed) do not
    # work, so adding them again does not bring their old links back.
    links_valid_after: Mapped[datetime | None]
    # How often an auditor is sent a digest (others are never sent one).
    digest: Mapped[DigestSchedule] = mapped_column(
        text_enum(DigestSchedule, "digest_schedule"),
        default=DigestSchedule.DAILY,
        server_default=DigestSchedule.DAILY.value,
    )

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", foreign_keys="Membership.user_id"
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[Role] = mapped_column(text_enum(Role, "role"))
    created_at: Mapped[datetime]
    # Who gave the role (an administrator, or the approver of a request);
    # None for the command line and organisation files.
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The approved request the role came from, if it did.
    access_request_id: Mapped[int | None] = mapped_column(ForeignKey("access_requests.id"))

    user: Mapped[User] = relationship(back_populates="memberships", foreign_keys=[user_id])
    organisation: Mapped[Organisation] = relationship()


class MfaCredential(Base):
    """A person's TOTP secret, encrypted at rest, and the last time step a
    code was accepted for (a code is never accepted twice)."""

    __tablename__ = "mfa_credentials"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    enrolled_at: Mapped[datetime | None]
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class MfaFailure(Base):
    """One wrong code, and where it came from (a digest of the client's
    address): too many from one place and that place must wait (see
    ``mailflow.core.second_factor.throttle``)."""

    __tablename__ = "mfa_failures"
    __table_args__ = (Index("ix_mfa_failures_user_id_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16), server_default="")


class VerifiedSession(Base):
    """A browser that gave a right second factor: its cookie holds a random
    key, this row its digest.  It names the credential it was verified
    with (the person's, enrolled at ``credential_enrolled_at``), so a reset
    or a new enrolment ends it; signing out deletes it."""

    __tablename__ = "verified_sessions"

    key_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    credential_enrolled_at: Mapped[datetime]
    verified_at: Mapped[datetime]

"""Pending actions: anything waiting for its person's second factor, and
the single use of every link that commits something."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailflow.core.models.base import Base


class PendingAction(Base):
    """An action waiting for its person, and the single use of a link.

    Every kind lives here: answers read from a reply (a ``Confirmation``
    adds what they are), and the use of a link that commits something (an
    alert's status link, an enrolment link), kept as a row whose digest
    is unique.  Only the digest of a token is stored here (a reply's
    confirmation still keeps its nonce, which its link carries); the conditional
    update that uses an action (or the unique digest of a used link) makes
    the second of two racing uses fail in the database."""

    __tablename__ = "pending_actions"
    __table_args__ = (Index("ix_pending_actions_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    # None for the use of a signed link: the link carries its own expiry.
    expires_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]
    # Set when a newer action of the same person replaced this one: only
    # the newest link works, so a flood of replies leaves one live link.
    superseded_at: Mapped[datetime | None]

"""The append-only audit log: one row for every state change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from mailflow.core.models import AuditEvent


def record_event(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    **details: Any,
) -> None:
    session.add(AuditEvent(at=at, actor=actor, action=action, subject=subject, details=details))

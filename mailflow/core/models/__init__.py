"""The domain's tables, one module per capability.

Alembic (mailflow/db/migrations) is the source of truth for the schema; these
classes describe it to SQLAlchemy, and a test checks that the two agree.
Every table is imported here, so ``Base.metadata`` (which the migrations
compare against) holds them all, and ``from mailflow.core.models import X``
works whichever module ``X`` lives in.
"""

from mailflow.core.models.access import (
    AccessDecisionKey,
    AccessRequest,
    AccessReview,
    AccessState,
    PeopleKey,
)
from mailflow.core.models.alerts import (
    Alert,
    AlertAudience,
    AlertUpdate,
    Delivery,
    DeliveryState,
    Severity,
)
from mailflow.core.models.answers import AlertStatus, Answer, Confirmation, PendingAnswer
from mailflow.core.models.audit import AuditEvent
from mailflow.core.models.base import Base, UTCDateTime
from mailflow.core.models.chasing import ChaseKind, Chaser, ChaserEmail, ChaserEmailState
from mailflow.core.models.digests import Digest, DigestSchedule, DigestState
from mailflow.core.models.jobs import Job, JobState
from mailflow.core.models.mail import (
    ImapCheckpoint,
    InboundMessage,
    InboundState,
    OutgoingEmail,
    OutgoingState,
)
from mailflow.core.models.pending import PendingAction
from mailflow.core.models.people import (
    Membership,
    MfaCredential,
    MfaFailure,
    NationalRole,
    Organisation,
    RecoveryCode,
    Role,
    User,
    VerifiedSession,
)

__all__ = [
    "AccessDecisionKey",
    "AccessRequest",
    "AccessReview",
    "AccessState",
    "Alert",
    "AlertAudience",
    "AlertStatus",
    "AlertUpdate",
    "Answer",
    "AuditEvent",
    "Base",
    "ChaseKind",
    "Chaser",
    "ChaserEmail",
    "ChaserEmailState",
    "Confirmation",
    "Delivery",
    "DeliveryState",
    "Digest",
    "DigestSchedule",
    "DigestState",
    "ImapCheckpoint",
    "InboundMessage",
    "InboundState",
    "Job",
    "JobState",
    "Membership",
    "MfaCredential",
    "MfaFailure",
    "NationalRole",
    "Organisation",
    "OutgoingEmail",
    "OutgoingState",
    "PendingAction",
    "PendingAnswer",
    "PeopleKey",
    "RecoveryCode",
    "Role",
    "Severity",
    "UTCDateTime",
    "User",
    "VerifiedSession",
]

"""Who may read the report a link opens, and whether this browser has
shown it is them: the link is bound to one auditor (``u``), and the report
is shown only to a browser whose verified session is that auditor's, held
on the server (a verified session of anyone else does not count: the page
asks for this auditor's code).

Confirming the code is the only thing the page writes, through the one
path every page takes (``commit_with_second_factor``): the same throttling
and lock-out, and the verified session it starts.  The change it commits
is nothing: auditors are read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session
from starlette.requests import Request

from mailflow.core.links import REPORT_LINK
from mailflow.core.models import Alert, NationalRole, User
from mailflow.core.pages.committing import CodeRefused, Committed, commit_with_second_factor
from mailflow.core.pages.refusals import (
    INVALID,
    Refusal,
    int_field,
    refuse_links_from_before_removal,
    verify_token,
)
from mailflow.core.pages.security import is_verified, session_user, verified_key
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled
from mailflow.core.second_factor.verified_sessions import verified_session_holds
from mailflow.reports.report_link import USER_FIELD
from mailflow.reports.reported_alerts import alert_in_report

NOT_AUDITOR = (
    "This report is only for the auditors of the service, and this link was not made for one "
    "(or their access has been removed). Nothing has been shown."
)


def not_enrolled(help_email: str) -> str:
    return (
        "Before the report is shown, we check it is you with a code from an authenticator "
        "app on your phone (such as Microsoft Authenticator or Google Authenticator), and you "
        "have not set one up yet. Use the link in the welcome email we sent when you were "
        "made an auditor; it works for 7 days. If it has expired or you cannot find it, write "
        f"to {help_email} and ask for a new one. Then open this report link again."
    )


@dataclass(frozen=True)
class Auditor:
    user_id: int
    name: str


class ReportAccess:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tokens = REPORT_LINK.tokens(runtime.settings)

    def auditor(self, session: Session, token: str, now: datetime) -> Auditor:
        """The link's auditor, or the refusal: the link not valid, expired
        or from before they were removed, the person no longer an active
        auditor, or without an authenticator app to check."""
        user_id = int_field(verify_token(self.tokens, token, now), USER_FIELD)
        user = session.get(User, user_id)
        if user is None:
            raise Refusal(400, "This link is not valid", INVALID)
        if not user.active or user.national_role is not NationalRole.AUDITOR:
            raise Refusal(403, "This report is for auditors", NOT_AUDITOR)
        refuse_links_from_before_removal(self.tokens, token, user)
        if not is_enrolled(session, user.id):
            raise Refusal(
                403,
                "Set up your authenticator app first",
                not_enrolled(self.runtime.settings.help_email),
            )
        return Auditor(user.id, user.name)

    @staticmethod
    def verified(session: Session, request: Request, user_id: int, now: datetime) -> bool:
        """Whether this browser gave this auditor's second factor within the
        last minutes, as the server recorded it (the cookie alone proves
        nothing).  Only reads."""
        key = verified_key(request)
        if key is None or not is_verified(request, user_id, now):
            return False
        return verified_session_holds(session, key=key, user_id=user_id, now=now)

    @staticmethod
    def someone_else_verified(request: Request, user_id: int) -> bool:
        """This browser last confirmed a code for another person."""
        other = session_user(request)
        return other is not None and other != user_id

    def confirm_code(
        self, request: Request, user_id: int, code: str, now: datetime
    ) -> CodeRefused | None:
        """Check the auditor's code (a wrong one counts towards the
        lock-out) and, when right, start this browser's verified session;
        the refusal to show, or None."""
        outcome = commit_with_second_factor(
            self.runtime,
            request,
            user_id=user_id,
            code=code,
            now=now,
            change=lambda session: Committed(),
        )
        if isinstance(outcome, CodeRefused):
            return outcome
        assert isinstance(outcome, Committed), outcome
        return None


NO_SUCH_ALERT = "There is no alert with that reference in the report. Go back to the report."


def reported_alert(session: Session, request: Request, *, as_at: datetime) -> Alert:
    """The alert the address names, as the report shows it; else a 404."""
    found = alert_in_report(session, request.path_params["reference"], as_at=as_at)
    if found is None:
        raise Refusal(404, "Alert not found", NO_SUCH_ALERT)
    return found

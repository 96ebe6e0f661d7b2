"""Committing answers: what the two kinds that record them share (a status
link, ``/r/``, in status_link.py, and a reply's answers, ``/c/``, in
reply_pages.py): who may answer, the page for a link already used,
recording with its receipts, and the page after the commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailflow.answers.answer_rights import answer_rights
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.receipts import queue_receipts
from mailflow.answers.recording import alert_status_lines, record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.mail.templates import format_time
from mailflow.core.models import Alert, Organisation, User
from mailflow.core.pages.committing import CodeCheck, Committed
from mailflow.core.pages.refusals import INVALID, Refusal
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime

ALREADY = "An answer has already been recorded from this link. Nothing more was recorded."
HOW_TO_UPDATE = (
    "To change an answer, reply to the alert email with the new status (for example "
    '"{code}: complete"), or open another status link in it. Each link works once.'
)


def already_recorded(
    session: Session,
    zone: ZoneInfo,
    *,
    alert_id: int,
    organisation_ids: list[int],
    status_code: int,
) -> Refusal:
    """The refusal for a used link: not a dead end, but where the
    organisations stand now, who recorded it and when, and how to update it."""
    lines = alert_status_lines(session, alert_id=alert_id, organisation_ids=organisation_ids)
    details = []
    for line in lines:
        if line.status is None or line.answered_at is None:
            details.append(f"{line.name} ({line.code}): no answer recorded yet.")
            continue
        who = line.answered_by_name or line.answered_by or "someone"
        when = format_time(line.answered_at, zone)
        label = AnswerStatus(line.status).label
        details.append(f"{line.name} ({line.code}): {label}, recorded by {who} on {when}.")
    example = lines[0].code if lines else "ORG"
    details.append(HOW_TO_UPDATE.format(code=example))
    return Refusal(status_code, "Already recorded", ALREADY, details=details)


def active_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Refusal(400, "This link is not valid", INVALID)
    refuse_inactive(user)
    return user


def refuse_inactive(user: User) -> None:
    if not user.active:
        raise Refusal(
            403,
            "Your access has been removed",
            "You can no longer answer alerts with this service. Nothing has been recorded.",
        )


def no_longer(org: Organisation) -> Refusal:
    return Refusal(
        403,
        "You no longer answer for this organisation",
        f"You no longer answer for {org.name} ({org.code}), so nothing has been recorded. "
        "Ask one of its administrators if this is wrong.",
    )


class AnswerKind:
    """The parts of committing answers that do not depend on where they
    came from.  A subclass says which alert and organisations a request's
    context is about (``answering``)."""

    missing_code = "Enter the code from your authenticator app"
    verified_session_counts = True

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.zone = runtime.settings.zone

    def answering(self, context: object) -> tuple[int, list[int]]:
        """The alert and the organisations the form is for."""
        raise NotImplementedError

    def code_check(self, context: object, now: datetime) -> CodeCheck | None:
        return None

    def record(
        self,
        session: Session,
        *,
        user: User,
        alert: Alert,
        answers: Sequence[AnswerValue],
        via: str,
        now: datetime,
        asked_at: datetime,
        confirmation_id: int | None = None,
    ) -> Committed:
        """Record the answers and queue their receipts, in the commit's
        transaction.  ``user`` and ``alert`` are as the page loaded them
        (what may have changed since is read again, in one statement, by
        ``answer_rights``).  ``asked_at`` is when the link or the reply
        being confirmed was made: one from before an update that asked for
        answers again is refused."""
        rights = answer_rights(session, user_id=user.id, alert_id=alert.id)
        asked_again = rights.asked_again_at if rights else None
        # To the second: a link's signing time is kept to the second, and a
        # link in the update's own email may be signed in the same second.
        if asked_again is not None and asked_at < asked_again.replace(microsecond=0):
            raise Refusal(
                409,
                "This alert has been updated",
                "The alert was updated on "
                f"{format_time(asked_again, self.zone)} and asks for answers again, so this "
                "answer from before it has not been recorded. Use the links or reply to the "
                "update email.",
            )
        recorded = record_answers(
            session,
            self.runtime.settings,
            user_id=user.id,
            alert_id=alert.id,
            answers=answers,
            via=via,
            confirmation_id=confirmation_id,
            now=now,
            rights=rights,
        )
        queue_receipts(
            session, self.runtime.settings, user=user, alert=alert, answers=recorded, now=now
        )
        return Committed(
            [a.id for a in recorded],
            event="answer_committed",
            event_fields={
                "alert_id": alert.id,
                "organisation_ids": sorted({a.organisation_id for a in recorded}),
                "answer_ids": [a.id for a in recorded],
                "via": via,
            },
        )

    def committed(self, request: Request, context: object, outcome: Committed) -> Response:
        request.session["recorded"] = outcome.result
        return RedirectResponse("/recorded", status_code=303)

    def already_used(self, context: object) -> Refusal:
        alert_id, organisation_ids = self.answering(context)
        with self.runtime.readers() as session:
            return already_recorded(
                session,
                self.zone,
                alert_id=alert_id,
                organisation_ids=organisation_ids,
                status_code=409,
            )

    def refused(self, context: object, message: str) -> Refusal:
        return Refusal(
            403,
            "You no longer answer for this organisation",
            f"Nothing has been recorded: {message}.",
        )

"""Answers read from a reply (``/c/TOKEN``, from a "confirm your answer"
email): a pending action, shown with the further information the reply
gave, committed once after a second factor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.answering import (
    AnswerKind,
    active_user,
    already_recorded,
    no_longer,
)
from mailflow.answers.forms import FIELDS, Information, date_parts, read_information, typed_parts
from mailflow.answers.pending_answers import answerable_organisations
from mailflow.answers.recording import use_confirmation
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import UpdateDates
from mailflow.core import pending
from mailflow.core.links import CONFIRM_LINK, SETUP_LINK_SUFFIX
from mailflow.core.models import Alert, Confirmation, Organisation, PendingAnswer, User
from mailflow.core.pages.commit_flow import Change
from mailflow.core.pages.committing import AlreadyUsed, Outcome
from mailflow.core.pages.forms import Problems, text
from mailflow.core.pages.refusals import (
    EXPIRED,
    INVALID,
    Refusal,
    int_field,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.mfa import is_enrolled

SUPERSEDED = (
    "You replied again about this alert, so this link was replaced by the one in your newest "
    '"confirm your answer" email. Nothing has been recorded from this one. Use the newest link.'
)


@dataclass(frozen=True)
class PendingItem:
    organisation: Organisation
    status: AnswerStatus
    information: Information
    prefix: str


@dataclass(frozen=True)
class ConfirmContext:
    user: User
    alert: Alert
    confirmation: Confirmation
    items: list[PendingItem]
    enrolled: bool


def _as_typed(answer: PendingAnswer, default_next_update: date | None) -> Information:
    """The reply's further information, as the form shows it."""
    return Information(
        note=answer.note,
        reason=answer.reason,
        mitigations=answer.mitigations,
        expected_on=answer.expected_on,
        expected_parts=date_parts(answer.expected_on),
        next_update_on=answer.next_update_on,
        next_update_parts=date_parts(answer.next_update_on),
        default_next_update=default_next_update,
    )


def _typed(form: dict[str, Any], item: PendingItem) -> Information:
    """What was typed into the form, to show it again."""
    prefix = item.prefix
    return Information(
        note=text(form, f"{prefix}note"),
        reason=text(form, f"{prefix}reason"),
        mitigations=text(form, f"{prefix}mitigations"),
        expected_parts=typed_parts(form, prefix, "expected"),
        next_update_parts=typed_parts(form, prefix, "next-update"),
        default_next_update=item.information.default_next_update,
    )


class ReplyAnswersKind(AnswerKind):
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        super().__init__(runtime, pages)
        self.tokens = CONFIRM_LINK.tokens(runtime.settings)
        self.dates = UpdateDates.of(runtime.settings)

    def user_id(self, context: ConfirmContext) -> int:
        return context.user.id

    def answering(self, context: object) -> tuple[int, list[int]]:
        assert isinstance(context, ConfirmContext)
        return context.alert.id, [item.organisation.id for item in context.items]

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> ConfirmContext:
        confirmation = self._open(session, payload, now, posted)
        user = active_user(session, confirmation.user_id)
        alert = session.get_one(Alert, confirmation.alert_id)
        answerable = {
            o.id for o in answerable_organisations(session, user_id=user.id, alert_id=alert.id)
        }
        items = []
        for answer in confirmation.answers:
            org = session.get_one(Organisation, answer.organisation_id)
            if org.id not in answerable:
                raise no_longer(org)
            status = AnswerStatus(answer.status)
            # Without an expected date: the page names that date apart.
            default = self.dates.next_update_on(status, answered_at=now, expected_on=None)
            items.append(PendingItem(org, status, _as_typed(answer, default), f"{org.code}-"))
        refuse_links_from_before_removal(self.tokens, token, user)
        return ConfirmContext(user, alert, confirmation, items, is_enrolled(session, user.id))

    def _open(
        self, session: Session, payload: dict[str, Any], now: datetime, posted: bool
    ) -> Confirmation:
        """The confirmation the link names, if it can still be committed."""
        nonce = payload.get("n")
        found = pending.find(
            session,
            action_id=int_field(payload, "c"),
            kind=pending.REPLY_ANSWERS,
            token=nonce if isinstance(nonce, str) else "",
        )
        confirmation = session.get(Confirmation, found.id) if found else None
        if confirmation is None or confirmation.user_id != int_field(payload, "u"):
            raise Refusal(400, "This link is not valid", INVALID)
        if confirmation.used_at is not None:
            raise already_recorded(
                session,
                self.zone,
                alert_id=confirmation.alert_id,
                organisation_ids=[a.organisation_id for a in confirmation.answers],
                status_code=409 if posted else 200,
            )
        if confirmation.superseded_at is not None:
            raise Refusal(410, "This link has been replaced", SUPERSEDED)
        if pending.is_expired(confirmation, now):
            raise Refusal(410, "This link has expired", EXPIRED)
        return confirmation

    def read(
        self,
        context: ConfirmContext,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        inputs: list[AnswerValue] = []
        today = self.dates.today(now)
        for item in context.items:
            information = read_information(form, item.status, item.prefix, problems, today=today)
            inputs.append(information.answer(item.organisation.code, item.status))
        user, alert = context.user, context.alert
        confirmation_id, nonce = context.confirmation.id, context.confirmation.nonce

        def change(session: Session) -> Outcome:
            confirmation = use_confirmation(
                session, confirmation_id=confirmation_id, nonce=nonce, user_id=user.id, now=now
            )
            if confirmation is None:
                return AlreadyUsed()
            return self.record(
                session,
                user=user,
                alert=alert,
                answers=inputs,
                via="reply",
                confirmation_id=confirmation.id,
                now=now,
                asked_at=confirmation.created_at,
            )

        return change

    def page(
        self,
        request: Request,
        context: ConfirmContext,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        items = context.items
        if form is not None:
            # Show what was typed, not what the reply said.
            items = [
                PendingItem(item.organisation, item.status, _typed(form, item), item.prefix)
                for item in items
            ]
        return self.pages.render(
            request,
            "confirm.html",
            {
                "title": f"Confirm your answer to {context.alert.reference}",
                "alert": context.alert,
                "items": items,
                "fields": FIELDS,
                "verified": verified,
                "enrolled": context.enrolled,
                "setup_action": request.url.path.rstrip("/") + SETUP_LINK_SUFFIX,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

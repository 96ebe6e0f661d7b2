"""A status link from an alert email (``/r/TOKEN``): one status for one
organisation (and, if the person chooses, the others they answer for),
committed once after a second factor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from mailflow.answers.answer_rights import read_link
from mailflow.answers.answering import (
    AnswerKind,
    active_user,
    already_recorded,
    no_longer,
    refuse_inactive,
)
from mailflow.answers.forms import FIELDS, Information, read_information, typed_parts
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import UpdateDates
from mailflow.core import pending
from mailflow.core.links import ANSWER_LINK, SETUP_LINK_SUFFIX
from mailflow.core.models import Alert, Organisation, User
from mailflow.core.pages.commit_flow import Change
from mailflow.core.pages.committing import AlreadyUsed, Outcome
from mailflow.core.pages.forms import Problems, text
from mailflow.core.pages.refusals import (
    INVALID,
    Refusal,
    int_field,
    refuse_links_from_before_removal,
)
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime


@dataclass(frozen=True)
class LinkContext:
    user: User
    alert: Alert
    organisation: Organisation
    status: AnswerStatus
    others: list[Organisation]
    enrolled: bool
    # The next update (or review) recorded if the person asks for none.
    default_next_update: date | None


class StatusLinkKind(AnswerKind):
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        super().__init__(runtime, pages)
        self.tokens = ANSWER_LINK.tokens(runtime.settings)
        self.dates = UpdateDates.of(runtime.settings)

    def user_id(self, context: LinkContext) -> int:
        return context.user.id

    def answering(self, context: object) -> tuple[int, list[int]]:
        assert isinstance(context, LinkContext)
        return context.alert.id, [context.organisation.id]

    def load(
        self, session: Session, payload: dict[str, Any], token: str, now: datetime, posted: bool
    ) -> LinkContext:
        try:
            status = AnswerStatus(str(payload.get("s")))
        except ValueError:
            raise Refusal(400, "This link is not valid", INVALID) from None
        user_id, alert_id, org_id = (int_field(payload, key) for key in ("u", "a", "o"))
        reading = read_link(session, user_id=user_id, alert_id=alert_id, token=token)
        if reading is None:
            active_user(session, user_id)
            raise Refusal(400, "This link is not valid", INVALID)
        user, alert = reading.user, reading.alert
        refuse_inactive(user)
        org = next((o for o in reading.answerable if o.id == org_id), None)
        if org is None:
            named = session.get(Organisation, org_id)
            raise no_longer(named) if named else Refusal(400, "This link is not valid", INVALID)
        refuse_links_from_before_removal(self.tokens, token, user)
        if reading.used:
            raise already_recorded(
                session,
                self.zone,
                alert_id=alert.id,
                organisation_ids=[org.id],
                status_code=409 if posted else 200,
            )
        return LinkContext(
            user=user,
            alert=alert,
            organisation=org,
            status=status,
            others=[o for o in reading.answerable if o.id != org.id],
            enrolled=reading.enrolled,
            default_next_update=self.dates.next_update_on(
                status, answered_at=now, expected_on=None
            ),
        )

    def read(
        self,
        context: LinkContext,
        form: dict[str, Any],
        problems: Problems,
        token: str,
        now: datetime,
    ) -> Change:
        information = read_information(
            form, context.status, "", problems, today=self.dates.today(now)
        )
        chosen = {code for code in form.get("also") or [] if isinstance(code, str)}
        others = {o.code: o for o in context.others}
        if chosen - set(others):
            raise Refusal(
                403,
                "You do not answer for that organisation",
                "You chose an organisation you do not answer for in this alert "
                f"({', '.join(sorted(chosen - set(others)))}). Nothing has been recorded.",
            )
        targets = [context.organisation] + [others[c] for c in sorted(chosen)]
        user, alert = context.user, context.alert

        def change(session: Session) -> Outcome:
            if not pending.use_link_once(
                session, kind=pending.ANSWER_LINK_USE, token=token, user_id=user.id, now=now
            ):
                return AlreadyUsed()
            return self.record(
                session,
                user=user,
                alert=alert,
                answers=[information.answer(org.code, context.status) for org in targets],
                via="link",
                now=now,
                asked_at=self.tokens.issued_at(token),
            )

        return change

    def page(
        self,
        request: Request,
        context: LinkContext,
        *,
        verified: bool,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        posted = form or {}
        information = Information(
            note=text(posted, "note"),
            reason=text(posted, "reason"),
            mitigations=text(posted, "mitigations"),
            expected_parts=typed_parts(posted, "", "expected"),
            next_update_parts=typed_parts(posted, "", "next-update"),
            default_next_update=context.default_next_update,
        )
        return self.pages.render(
            request,
            "answer.html",
            {
                "title": f"Record your answer to {context.alert.reference}",
                "alert": context.alert,
                "organisation": context.organisation,
                "status": context.status,
                "fields": FIELDS[context.status],
                "information": information,
                "others": context.others,
                "also": set(posted.get("also") or []),
                "verified": verified,
                "enrolled": context.enrolled,
                "setup_action": request.url.path.rstrip("/") + SETUP_LINK_SUFFIX,
                "errors": problems.by_field,
                "error_list": problems.listed(),
            },
            status_code=status_code,
        )

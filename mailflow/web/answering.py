"""The confirmation pages: ``/r/TOKEN`` (a status link from an alert email)
and ``/c/TOKEN`` (answers read from a reply).  GET and HEAD only show what
would be recorded; POST commits it after the second factor."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailflow.domain.answers import (
    alert_status_lines,
    record_answers,
    use_confirmation,
    use_token_once,
)
from mailflow.domain.confirmations import answerable_organisations
from mailflow.domain.mfa import is_enrolled
from mailflow.domain.models import (
    Alert,
    Answer,
    Confirmation,
    Organisation,
    PendingAnswer,
    User,
)
from mailflow.domain.pending import is_expired, link_used
from mailflow.domain.statuses import AnswerStatus
from mailflow.domain.users import link_predates_removal
from mailflow.mail.alert_email import answer_tokens
from mailflow.mail.receipts import queue_receipts
from mailflow.mail.replies import confirm_tokens, describe_answer
from mailflow.mail.templates import format_time
from mailflow.mail.tokens import Purpose, TokenExpired, TokenInvalid, TokenService
from mailflow.web.committing import (
    AlreadyUsed,
    CodeRefused,
    Committed,
    Invalid,
    Outcome,
    Refused,
    commit_with_second_factor,
)
from mailflow.web.forms import FIELDS, Information, Problems, read_information, text
from mailflow.web.rendering import Pages
from mailflow.web.security import csrf_ok, is_verified, session_user
from mailflow.workers.runtime import Runtime

CODE_FIELD = "code"
# Appended to a link's path: where "email me a set-up link" posts.
SETUP_LINK_SUFFIX = "/setup-link"


class Refusal(Exception):
    """The request cannot go on; shown as a page with this status."""

    def __init__(
        self,
        status_code: int,
        title: str,
        message: str,
        *,
        sign_out: bool = False,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message
        self.sign_out = sign_out
        self.details = details or []


EXPIRED = (
    "This link has expired. Nothing has been recorded. Use a newer email about the alert, "
    "or reply to the alert email."
)
INVALID = (
    "This link is not valid: it may have been changed or cut short. Nothing has been "
    "recorded. Open it again from the email, or copy the whole address."
)
REPLACED = (
    "This link was sent before your access was removed, so it no longer works. Nothing has "
    "been recorded. Use a link from an email sent since you were added again."
)
SOMEONE_ELSE = (
    "This link was sent to someone else. Nothing has been recorded. If it was forwarded "
    "to you, ask for your own alert email. If you share this computer, sign out first."
)
FORM_EXPIRED = (
    "This form has expired, or was not sent from this service. Nothing has been recorded. "
    "Go back, reload the page and try again."
)
ALREADY = "An answer has already been recorded from this link. Nothing more was recorded."
SUPERSEDED = (
    "You replied again about this alert, so this link was replaced by the one in your newest "
    '"confirm your answer" email. Nothing has been recorded from this one. Use the newest link.'
)
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


def verify_token(tokens: TokenService, token: str, now: datetime) -> dict[str, Any]:
    try:
        return tokens.verify(token, now=now)
    except TokenExpired:
        raise Refusal(410, "This link has expired", EXPIRED) from None
    except TokenInvalid:
        raise Refusal(400, "This link is not valid", INVALID) from None


def refuse_links_from_before_removal(tokens: TokenService, token: str, user: User) -> None:
    if link_predates_removal(user, tokens.issued_at(token)):
        raise Refusal(410, "This link no longer works", REPLACED)


def _int(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Refusal(400, "This link is not valid", INVALID)
    return value


def check_session_user(request: Request, user_id: int) -> None:
    signed_in = session_user(request)
    if signed_in is not None and signed_in != user_id:
        raise Refusal(403, "This link was sent to someone else", SOMEONE_ELSE, sign_out=True)


def form_dict(form: Any) -> dict[str, Any]:
    """A posted form as a dict; fields given more than once become lists."""
    out: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        out[key] = values if len(values) > 1 or key == "also" else values[0]
    return out


def _active_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Refusal(400, "This link is not valid", INVALID)
    if not user.active:
        raise Refusal(
            403,
            "Your access has been removed",
            "You can no longer answer alerts with this service. Nothing has been recorded.",
        )
    return user


def _no_longer(org: Organisation) -> Refusal:
    return Refusal(
        403,
        "You no longer answer for this organisation",
        f"You no longer answer for {org.name} ({org.code}), so nothing has been recorded. "
        "Ask one of its administrators if this is wrong.",
    )


# ----------------------------------------------------------------- /r/TOKEN


@dataclass(frozen=True)
class LinkContext:
    user: User
    alert: Alert
    organisation: Organisation
    status: AnswerStatus
    others: list[Organisation]
    used: bool
    enrolled: bool


def _load_link(session: Session, payload: dict[str, Any], token: str) -> LinkContext:
    try:
        status = AnswerStatus(str(payload.get("s")))
    except ValueError:
        raise Refusal(400, "This link is not valid", INVALID) from None
    user = _active_user(session, _int(payload, "u"))
    alert = session.get(Alert, _int(payload, "a"))
    org = session.get(Organisation, _int(payload, "o"))
    if alert is None or org is None:
        raise Refusal(400, "This link is not valid", INVALID)
    answerable = answerable_organisations(session, user_id=user.id, alert_id=alert.id)
    if org.id not in {o.id for o in answerable}:
        raise _no_longer(org)
    return LinkContext(
        user=user,
        alert=alert,
        organisation=org,
        status=status,
        others=[o for o in answerable if o.id != org.id],
        used=link_used(session, token),
        enrolled=is_enrolled(session, user.id),
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


def _load_confirmation(
    session: Session, payload: dict[str, Any], now: datetime, zone: ZoneInfo, posted: bool
) -> ConfirmContext:
    confirmation = session.get(Confirmation, _int(payload, "c"))
    nonce = payload.get("n")
    user_id = _int(payload, "u")
    if (
        confirmation is None
        or not isinstance(nonce, str)
        or not hmac.compare_digest(confirmation.nonce.encode(), nonce.encode())
        or confirmation.user_id != user_id
    ):
        raise Refusal(400, "This link is not valid", INVALID)
    if confirmation.used_at is not None:
        raise already_recorded(
            session,
            zone,
            alert_id=confirmation.alert_id,
            organisation_ids=list(
                session.scalars(
                    select(PendingAnswer.organisation_id).where(
                        PendingAnswer.confirmation_id == confirmation.id
                    )
                )
            ),
            status_code=409 if posted else 200,
        )
    if confirmation.superseded_at is not None:
        raise Refusal(410, "This link has been replaced", SUPERSEDED)
    if is_expired(confirmation, now):
        raise Refusal(410, "This link has expired", EXPIRED)
    user = _active_user(session, user_id)
    alert = session.get_one(Alert, confirmation.alert_id)
    answerable = {
        o.id for o in answerable_organisations(session, user_id=user.id, alert_id=alert.id)
    }
    pending = session.scalars(
        select(PendingAnswer)
        .where(PendingAnswer.confirmation_id == confirmation.id)
        .order_by(PendingAnswer.id)
    ).all()
    items = []
    for answer in pending:
        org = session.get_one(Organisation, answer.organisation_id)
        if org.id not in answerable:
            raise _no_longer(org)
        items.append(
            PendingItem(
                organisation=org,
                status=AnswerStatus(answer.status),
                information=Information(
                    note=answer.note,
                    reason=answer.reason,
                    mitigations=answer.mitigations,
                    expected_on=answer.expected_on,
                    expected_parts=(
                        (
                            str(answer.expected_on.day),
                            str(answer.expected_on.month),
                            str(answer.expected_on.year),
                        )
                        if answer.expected_on
                        else ("", "", "")
                    ),
                ),
                prefix=f"{org.code}-",
            )
        )
    return ConfirmContext(user, alert, confirmation, items, is_enrolled(session, user.id))


class AnswerPages:
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages
        self.answer_tokens = answer_tokens(runtime.settings)
        self.confirm_tokens = confirm_tokens(runtime.settings)
        self.zone = runtime.settings.zone

    # Each endpoint reads the request body (if any) here, then does its
    # database work in a thread: the database driver blocks.

    async def link(self, request: Request) -> Response:
        token = request.path_params["token"]
        form = form_dict(await request.form()) if request.method == "POST" else None
        return await run_in_threadpool(self._guard, request, self._link, token, form)

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        form = form_dict(await request.form()) if request.method == "POST" else None
        return await run_in_threadpool(self._guard, request, self._confirm, token, form)

    async def recorded(self, request: Request) -> Response:
        return await run_in_threadpool(self._recorded, request)

    def _guard(self, request: Request, handler: Any, token: str, form: Any) -> Response:
        try:
            response: Response = handler(request, token, form)
            return response
        except Refusal as refusal:
            return self.pages.problem(
                request,
                refusal.status_code,
                refusal.title,
                refusal.message,
                details=refusal.details,
                sign_out=refusal.sign_out,
            )

    # ---- /r/TOKEN

    def _link(self, request: Request, token: str, form: dict[str, Any] | None) -> Response:
        now = self.runtime.clock()
        if form is not None and not csrf_ok(request, form):
            raise Refusal(403, "This form has expired", FORM_EXPIRED)
        payload = verify_token(self.answer_tokens, token, now)
        check_session_user(request, _int(payload, "u"))
        with self.runtime.readers() as session:
            context = _load_link(session, payload, token)
            refuse_links_from_before_removal(self.answer_tokens, token, context.user)
            if context.used:
                raise already_recorded(
                    session,
                    self.zone,
                    alert_id=context.alert.id,
                    organisation_ids=[context.organisation.id],
                    status_code=200 if form is None else 409,
                )
        verified = is_verified(request, context.user.id, now)
        if form is None:
            return self._link_page(request, context, verified, form={}, problems=Problems())

        problems = Problems()
        information = read_information(form, context.status, "", problems)
        chosen = {code for code in form.get("also") or [] if isinstance(code, str)}
        others = {o.code: o for o in context.others}
        if chosen - set(others):
            raise Refusal(
                403,
                "You do not answer for that organisation",
                "You chose an organisation you do not answer for in this alert "
                f"({', '.join(sorted(chosen - set(others)))}). Nothing has been recorded.",
            )
        code = None if verified else text(form, CODE_FIELD)
        if code == "":
            problems.add(CODE_FIELD, "Enter the code from your authenticator app")
        if problems:
            return self._link_page(
                request, context, verified, form=form, problems=problems, status_code=400
            )
        targets = [context.organisation] + [others[c] for c in sorted(chosen)]

        def change(session: Session) -> Outcome:
            if not use_token_once(
                session, token=token, purpose=Purpose.ANSWER.value, user_id=context.user.id, now=now
            ):
                return AlreadyUsed()
            answers = record_answers(
                session,
                user_id=context.user.id,
                alert_id=context.alert.id,
                answers=[information.answer(org.id, context.status) for org in targets],
                via="link",
                now=now,
            )
            self._receipts(session, context.user.id, context.alert.id, answers, now)
            return Committed([a.id for a in answers])

        outcome = commit_with_second_factor(
            self.runtime, request, user_id=context.user.id, code=code, now=now, change=change
        )
        return self._after(
            request,
            outcome,
            (context.alert.id, [org.id for org in targets]),
            lambda problems, status: self._link_page(
                request,
                context,
                is_verified(request, context.user.id, now),
                form=form,
                problems=problems,
                status_code=status,
            ),
        )

    def _link_page(
        self,
        request: Request,
        context: LinkContext,
        verified: bool,
        *,
        form: dict[str, Any],
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        posted = form or {}
        information = Information(
            note=text(posted, "note"),
            reason=text(posted, "reason"),
            mitigations=text(posted, "mitigations"),
            expected_parts=(
                text(posted, "expected-day"),
                text(posted, "expected-month"),
                text(posted, "expected-year"),
            ),
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

    # ---- /c/TOKEN

    def _confirm(self, request: Request, token: str, form: dict[str, Any] | None) -> Response:
        now = self.runtime.clock()
        if form is not None and not csrf_ok(request, form):
            raise Refusal(403, "This form has expired", FORM_EXPIRED)
        payload = verify_token(self.confirm_tokens, token, now)
        check_session_user(request, _int(payload, "u"))
        with self.runtime.readers() as session:
            context = _load_confirmation(session, payload, now, self.zone, form is not None)
        refuse_links_from_before_removal(self.confirm_tokens, token, context.user)
        verified = is_verified(request, context.user.id, now)
        if form is None:
            return self._confirm_page(request, context, verified, form=None, problems=Problems())

        problems = Problems()
        inputs = []
        for item in context.items:
            information = read_information(form, item.status, item.prefix, problems)
            inputs.append(information.answer(item.organisation.id, item.status))
        code = None if verified else text(form, CODE_FIELD)
        if code == "":
            problems.add(CODE_FIELD, "Enter the code from your authenticator app")
        if problems:
            return self._confirm_page(
                request, context, verified, form=form, problems=problems, status_code=400
            )

        def change(session: Session) -> Outcome:
            confirmation = use_confirmation(
                session,
                confirmation_id=context.confirmation.id,
                nonce=context.confirmation.nonce,
                user_id=context.user.id,
                now=now,
            )
            if confirmation is None:
                return AlreadyUsed()
            answers = record_answers(
                session,
                user_id=context.user.id,
                alert_id=context.alert.id,
                answers=inputs,
                via="reply",
                confirmation_id=confirmation.id,
                now=now,
            )
            self._receipts(session, context.user.id, context.alert.id, answers, now)
            return Committed([a.id for a in answers])

        outcome = commit_with_second_factor(
            self.runtime, request, user_id=context.user.id, code=code, now=now, change=change
        )
        return self._after(
            request,
            outcome,
            (context.alert.id, [item.organisation.id for item in context.items]),
            lambda problems, status: self._confirm_page(
                request,
                context,
                is_verified(request, context.user.id, now),
                form=form,
                problems=problems,
                status_code=status,
            ),
        )

    def _confirm_page(
        self,
        request: Request,
        context: ConfirmContext,
        verified: bool,
        *,
        form: dict[str, Any] | None,
        problems: Problems,
        status_code: int = 200,
    ) -> Response:
        items = context.items
        if form is not None:
            # Show what was typed, not what the reply said.
            items = [
                PendingItem(
                    item.organisation,
                    item.status,
                    Information(
                        note=text(form, f"{item.prefix}note"),
                        reason=text(form, f"{item.prefix}reason"),
                        mitigations=text(form, f"{item.prefix}mitigations"),
                        expected_parts=(
                            text(form, f"{item.prefix}expected-day"),
                            text(form, f"{item.prefix}expected-month"),
                            text(form, f"{item.prefix}expected-year"),
                        ),
                    ),
                    item.prefix,
                )
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

    # ---- shared

    def _receipts(
        self, session: Session, user_id: int, alert_id: int, answers: list[Answer], now: datetime
    ) -> None:
        queue_receipts(
            session,
            self.runtime.settings,
            user=session.get_one(User, user_id),
            alert=session.get_one(Alert, alert_id),
            answers=answers,
            now=now,
        )

    def _after(
        self,
        request: Request,
        outcome: Outcome,
        answering: tuple[int, list[int]],
        again: Any,
    ) -> Response:
        """The response to a commit's outcome; ``answering`` is the alert and
        the organisations the form was for."""
        if isinstance(outcome, Committed):
            request.session["recorded"] = outcome.answer_ids
            return RedirectResponse("/recorded", status_code=303)
        if isinstance(outcome, AlreadyUsed):
            alert_id, organisation_ids = answering
            with self.runtime.readers() as session:
                raise already_recorded(
                    session,
                    self.zone,
                    alert_id=alert_id,
                    organisation_ids=organisation_ids,
                    status_code=409,
                )
        if isinstance(outcome, Refused):
            raise Refusal(
                403,
                "You no longer answer for this organisation",
                f"Nothing has been recorded: {outcome.message}.",
            )
        problems = Problems()
        if isinstance(outcome, CodeRefused):
            problems.add(CODE_FIELD, outcome.message)
            response: Response = again(problems, 429 if outcome.locked_out else 400)
            return response
        assert isinstance(outcome, Invalid)
        problems.add(outcome.field, outcome.problem)
        response = again(problems, 400)
        return response

    # ---- /recorded

    def _recorded(self, request: Request) -> Response:
        ids = request.session.get("recorded")
        user_id = session_user(request)
        if not isinstance(ids, list) or user_id is None:
            return self.pages.problem(
                request,
                404,
                "Nothing to show",
                "There is no recent answer to show. Open a link from an alert email.",
            )
        with self.runtime.readers() as session:
            rows = session.execute(
                select(Answer, Organisation)
                .join(Organisation, Organisation.id == Answer.organisation_id)
                .where(Answer.id.in_([i for i in ids if isinstance(i, int)]))
                .where(Answer.user_id == user_id)
                .order_by(Organisation.code)
            ).all()
            if not rows:
                return self.pages.problem(
                    request, 404, "Nothing to show", "There is no recent answer to show."
                )
            alert = session.get_one(Alert, rows[0][0].alert_id)
            lines = [describe_answer(org, answer) for answer, org in rows]
            within = rows[0][0].within_deadline
        return self.pages.render(
            request,
            "recorded.html",
            {
                "title": "Answer recorded",
                "alert": alert,
                "lines": lines,
                "within_deadline": within,
            },
        )

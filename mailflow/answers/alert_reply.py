"""What a reply about an alert sends back: the "confirm your answer" email
with its pending answers, or the email saying why nothing was recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.pending_answers import confirmations_sent_since, record_pending_answers
from mailflow.answers.reply_emails import (
    PROBLEM_KIND,
    ReplyToAnswer,
    queue_confirmation_email,
    queue_reply_problem_email,
)
from mailflow.answers.reply_form import LineProblem
from mailflow.core.models import Alert, Delivery, Organisation, PendingAnswer, User
from mailflow.core.outgoing import recent_count
from mailflow.gateway.context import Outcome, ReplyContext, ignored, processed
from mailflow.people.users import lock_person


@dataclass(frozen=True)
class AlertReply:
    """A trusted reply to an alert email, with what answering it needs."""

    context: ReplyContext
    delivery: Delivery
    alert: Alert
    # The organisations in the audience the person answers for, by code.
    organisations: list[Organisation]

    @property
    def person(self) -> User:
        return self.context.owner.person

    def not_recorded(
        self,
        *,
        reason: str,
        outcome: str,
        problems: Sequence[LineProblem] = (),
        form_for: Sequence[Organisation] | None = None,
    ) -> Outcome:
        """Tell the person why nothing was recorded (with the reply form
        for ``form_for``, by default their organisations), unless they have
        had too many such emails in the last hour: a loop with a broken mail
        client must not become a flood.  Counted under a lock on the person,
        so jobs running at once count in turn."""
        context, person = self.context, self.person
        lock_person(context.session, person.id)
        sent = recent_count(
            context.session,
            recipient=person.email,
            kinds=[PROBLEM_KIND],
            since=context.now - timedelta(hours=1),
        )
        if sent >= context.settings.error_replies_per_hour:
            return processed(f"{outcome}; no email (limit of error replies reached)")
        queue_reply_problem_email(
            context.session,
            context.settings,
            user=person,
            alert=self.alert,
            reason=reason,
            problems=list(problems),
            organisations=self.organisations if form_for is None else form_for,
            replying_to=self._replying_to(),
            now=context.now,
        )
        return processed(f"{outcome}; told the sender")

    def pending(self, answers: Sequence[AnswerValue]) -> Outcome:
        """Record the answers as pending and send the link that confirms
        them, unless the person has had too many such links this hour."""
        context, person = self.context, self.person
        since = context.now - timedelta(hours=1)
        recent = confirmations_sent_since(context.session, user_id=person.id, since=since)
        if recent >= context.settings.confirm_emails_per_hour:
            # Kept raw, but no new link: genuine links in a flood would be
            # the attack (a forged sender is refused before this point).
            return ignored("too many replies this hour: no confirmation sent")
        confirmation = record_pending_answers(
            context.session,
            user_id=person.id,
            alert_id=self.alert.id,
            delivery_id=self.delivery.id,
            inbound_message_id=context.message.id,
            answers=answers,
            now=context.now,
            lifetime=timedelta(hours=context.settings.confirm_link_hours),
        )
        by_id = {o.id: o for o in self.organisations}
        recorded = context.session.scalars(
            select(PendingAnswer)
            .where(PendingAnswer.confirmation_id == confirmation.id)
            .order_by(PendingAnswer.id)
        )
        queue_confirmation_email(
            context.session,
            context.settings,
            user=person,
            alert=self.alert,
            confirmation=confirmation,
            answers=[(by_id[p.organisation_id], p) for p in recorded],
            replying_to=self._replying_to(),
            now=context.now,
        )
        summary = ", ".join(f"{a.organisation} {a.status.value}" for a in answers)
        return processed(f"pending answers recorded ({summary}); confirmation sent")

    def _replying_to(self) -> ReplyToAnswer:
        """The person's reply these emails answer, in the alert's thread."""
        return ReplyToAnswer(
            self.context.message.id,
            self.context.reading.message_id,
            self.delivery.message_id,
            self.delivery.reply_key,
        )

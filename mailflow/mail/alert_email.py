"""The alert email: one per recipient, with their organisations' status
links and the reply form."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime

from mailflow.config import Settings
from mailflow.domain.models import Alert, Delivery, Organisation, Role
from mailflow.domain.statuses import AnswerStatus
from mailflow.mail.addresses import bounce_address, reply_address
from mailflow.mail.messages import (
    AUTO_SUBMITTED_GENERATED,
    AlternativeSkeleton,
    MessageHeaders,
    address,
    build_message,
)
from mailflow.mail.reply_form import build_reply_form
from mailflow.mail.templates import RenderedEmail, render_email
from mailflow.mail.tokens import Purpose, TokenService
from mailflow.mail.transport import Envelope, OutgoingMessage

ANSWER_PATH = "/r/"


def answer_tokens(settings: Settings) -> TokenService:
    return TokenService(
        settings.secret_key, Purpose.ANSWER, timedelta(days=settings.answer_link_days)
    )


@dataclass(frozen=True)
class StatusLink:
    status: AnswerStatus
    label: str
    url: str


@dataclass(frozen=True)
class OrganisationLinks:
    code: str
    name: str
    links: list[StatusLink]


class AlertEmailComposer:
    """Composes the alert emails of one alert.  Built once per batch; the
    per-recipient work is the links, the form and the rendering."""

    def __init__(
        self, alert: Alert, audience: dict[int, Organisation], settings: Settings, now: datetime
    ) -> None:
        self.alert = alert
        self.audience = audience
        self.settings = settings
        self.now = now
        self.tokens = answer_tokens(settings)
        self.sender = settings.from_header
        self.skeleton = AlternativeSkeleton(
            {
                "From": self.sender,
                "Date": format_datetime(now),
                "X-Mailflow-Alert": alert.reference,
            },
            auto_submitted=AUTO_SUBMITTED_GENERATED,
        )

    def answer_link(self, delivery: Delivery, org: Organisation, status: AnswerStatus) -> str:
        token = self.tokens.sign(
            {
                "d": delivery.id,
                "u": delivery.user_id,
                "a": self.alert.id,
                "o": org.id,
                "s": status.value,
            }
        )
        return f"{self.settings.base_url}{ANSWER_PATH}{token}"

    def _render(self, delivery: Delivery) -> RenderedEmail:
        user = delivery.user
        held = sorted(
            (
                (self.audience[m.organisation_id], m.role)
                for m in user.memberships
                if m.organisation_id in self.audience
            ),
            key=lambda pair: pair[0].code,
        )
        answerable = [org for org, role in held if Role(role).can_answer]
        info_only = [org for org, role in held if not Role(role).can_answer]
        organisations = [
            OrganisationLinks(
                org.code,
                org.name,
                [StatusLink(s, s.label, self.answer_link(delivery, org, s)) for s in AnswerStatus],
            )
            for org in answerable
        ]
        context: dict[str, object] = {
            "service_name": self.settings.service_name,
            "alert": self.alert,
            "recipient_name": user.name,
            "can_answer": bool(answerable),
            "organisations": organisations,
            "info_only_organisations": info_only,
            "all_organisations": [org for org, _ in held],
            "form": build_reply_form([(o.code, o.name) for o in answerable]),
        }
        return render_email("alert", context, zone_name=self.settings.timezone)

    def _envelope(self, delivery: Delivery) -> Envelope:
        return Envelope(
            bounce_address(delivery.bounce_key, self.settings.mail_domain), delivery.user.email
        )

    def compose(self, delivery: Delivery) -> OutgoingMessage:
        rendered = self._render(delivery)
        data = self.skeleton.assemble(
            subject=rendered.subject,
            to=(delivery.user.name, delivery.user.email),
            # Alert-only contacts get a reply address too: a question they
            # send back is traced to them and answered, not lost.
            reply_to=reply_address(delivery.reply_key, self.settings.mail_domain),
            message_id=f"<{delivery.message_id}>",
            text=rendered.text,
            html=rendered.html,
        )
        return OutgoingMessage(self._envelope(delivery), data)

    def compose_whole(self, delivery: Delivery) -> OutgoingMessage:
        """The same email built whole with the email package: slower, and
        the reference ``compose`` is tested against."""
        rendered = self._render(delivery)
        headers = MessageHeaders(
            sender=self.sender,
            to=address(delivery.user.name, delivery.user.email),
            message_id=delivery.message_id,
            date=self.now,
            reply_to=reply_address(delivery.reply_key, self.settings.mail_domain),
            extra={"X-Mailflow-Alert": self.alert.reference},
        )
        return OutgoingMessage(self._envelope(delivery), bytes(build_message(rendered, headers)))

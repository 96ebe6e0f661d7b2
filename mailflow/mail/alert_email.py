"""The alert email: one per recipient, with their organisations' status
links and the reply form."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailflow.config import Settings
from mailflow.domain.models import Alert, Delivery, Organisation, Role
from mailflow.domain.statuses import AnswerStatus
from mailflow.mail.addresses import bounce_address, reply_address
from mailflow.mail.messages import MessageHeaders, address, build_message
from mailflow.mail.reply_form import build_reply_form
from mailflow.mail.templates import render_email
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

    def compose(self, delivery: Delivery) -> OutgoingMessage:
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
        rendered = render_email("alert", context, zone_name=self.settings.timezone)
        domain = self.settings.mail_domain
        headers = MessageHeaders(
            sender=self.sender,
            to=address(user.name, user.email),
            message_id=delivery.message_id,
            date=self.now,
            # Alert-only contacts get a reply address too: a question they
            # send back is traced to them and answered, not lost.
            reply_to=reply_address(delivery.reply_key, domain),
            extra={"X-Mailflow-Alert": self.alert.reference},
        )
        message = build_message(rendered, headers)
        return OutgoingMessage(
            Envelope(bounce_address(delivery.bounce_key, domain), user.email), bytes(message)
        )

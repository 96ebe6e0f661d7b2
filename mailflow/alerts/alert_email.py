"""The alert email: one per recipient, with their organisations' status
links and the reply form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from markupsafe import escape

from mailflow.alerts.deliveries import ClaimedDelivery
from mailflow.answers.reply_form import build_reply_form
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.links import ACCESS_NEW_LINK, ANSWER_LINK
from mailflow.core.mail.addresses import bounce_address, reply_address
from mailflow.core.mail.messages import (
    AUTO_SUBMITTED_GENERATED,
    MessageHeaders,
    address,
    build_message,
)
from mailflow.core.mail.one_off import access_new_payload
from mailflow.core.mail.skeleton import AlternativeSkeleton
from mailflow.core.mail.templates import RenderedEmail, render_service_email
from mailflow.core.mail.transport import Envelope, OutgoingMessage
from mailflow.core.models import Alert, Organisation


@dataclass(frozen=True)
class StatusLink:
    status: AnswerStatus
    label: str
    url: str


@dataclass(frozen=True)
class OrganisationView:
    code: str
    name: str

    @classmethod
    def of(cls, org: Organisation) -> OrganisationView:
        return cls(org.code, org.name)


_SLOT = re.compile("\x00([a-z0-9_]+)\x00")


def _fill(stencil: str, values: dict[str, str]) -> str:
    return _SLOT.sub(lambda m: values[m.group(1)], stencil)


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
        # Made once: an alert email carries four links per organisation.
        self.tokens = ANSWER_LINK.tokens(settings)
        self.access_tokens = ACCESS_NEW_LINK.tokens(settings)
        self.sender = settings.from_header
        self.skeleton = AlternativeSkeleton(
            {
                "From": str(self.sender),
                "Date": format_datetime(now),
                "X-Mailflow-Alert": alert.reference,
            },
            auto_submitted=AUTO_SUBMITTED_GENERATED,
        )
        self._stencils: dict[tuple[int, int], RenderedEmail] = {}

    def answer_link(
        self, delivery: ClaimedDelivery, org: Organisation, status: AnswerStatus
    ) -> str:
        token = self.tokens.sign(
            {
                "d": delivery.id,
                "u": delivery.user_id,
                "a": self.alert.id,
                "o": org.id,
                "s": status.value,
            },
            self.now,
        )
        return ANSWER_LINK.url(self.settings, token)

    def access_new_link(self, delivery: ClaimedDelivery) -> str:
        """The footer's "Request access for another organisation", bound
        to the recipient: one more token signed per email."""
        token = self.access_tokens.sign(access_new_payload(delivery.user_id), self.now)
        return ACCESS_NEW_LINK.url(self.settings, token)

    def _held(self, delivery: ClaimedDelivery) -> tuple[list[Organisation], list[Organisation]]:
        """The recipient's organisations in the audience: those they answer
        for, and those they only hear about, each in code order."""
        held = sorted(
            (
                (self.audience[org_id], role)
                for org_id, role in delivery.roles.items()
                if org_id in self.audience
            ),
            key=lambda pair: pair[0].code,
        )
        return [o for o, r in held if r.can_answer], [o for o, r in held if not r.can_answer]

    def _context(
        self,
        name: str,
        answerable: list[OrganisationView],
        links: list[list[str]],
        info_only: list[OrganisationView],
        every: list[OrganisationView],
        access_new_link: str,
    ) -> dict[str, object]:
        return {
            "alert": self.alert,
            "access_new_link": access_new_link,
            "recipient_name": name,
            "can_answer": bool(answerable),
            "organisations": [
                OrganisationLinks(
                    org.code,
                    org.name,
                    [
                        StatusLink(s, s.label, url)
                        for s, url in zip(AnswerStatus, urls, strict=True)
                    ],
                )
                for org, urls in zip(answerable, links, strict=True)
            ],
            "info_only_organisations": info_only,
            "all_organisations": every,
            "form": build_reply_form([(o.code, o.name) for o in answerable]),
        }

    def recipient_context(self, delivery: ClaimedDelivery) -> dict[str, object]:
        """What the alert's templates show this recipient: their
        organisations, fresh status links and the reply form.  Other
        emails in the alert's thread (an update) render it with more."""
        answerable, info_only = self._held(delivery)
        view = OrganisationView.of
        return self._context(
            delivery.recipient_name,
            [view(o) for o in answerable],
            [[self.answer_link(delivery, o, s) for s in AnswerStatus] for o in answerable],
            [view(o) for o in info_only],
            sorted((view(o) for o in answerable + info_only), key=lambda o: o.code),
            self.access_new_link(delivery),
        )

    def render_directly(self, delivery: ClaimedDelivery) -> RenderedEmail:
        """Render the templates for this recipient: the reference the
        stencils are tested against, and the way for any other shape."""
        return render_service_email(self.settings, "alert", self.recipient_context(delivery))

    def _render(self, delivery: ClaimedDelivery) -> RenderedEmail:
        """The templates rendered once per shape of recipient (how many
        organisations they answer for, how many they only hear about) with
        placeholders, then filled in: rendering them whole for each of tens
        of thousands of recipients was most of the cost of composing."""
        answerable, info_only = self._held(delivery)
        shape = (len(answerable), len(info_only))
        stencil = self._stencils.get(shape)
        if stencil is None:
            stencil = self._stencils[shape] = self._make_stencil(*shape)
        every = sorted(answerable + info_only, key=lambda o: o.code)
        values = {"name": delivery.recipient_name, "access": self.access_new_link(delivery)}
        for i, org in enumerate(answerable):
            values[f"o{i}c"], values[f"o{i}n"] = org.code, org.name
            for status in AnswerStatus:
                values[f"o{i}{status.value}"] = self.answer_link(delivery, org, status)
        for i, org in enumerate(info_only):
            values[f"i{i}c"], values[f"i{i}n"] = org.code, org.name
        for i, org in enumerate(every):
            values[f"a{i}c"], values[f"a{i}n"] = org.code, org.name
        return RenderedEmail(
            subject=stencil.subject,
            text=_fill(stencil.text, values),
            html=_fill(stencil.html, {k: str(escape(v)) for k, v in values.items()}),
        )

    def _make_stencil(self, answering: int, informed: int) -> RenderedEmail:
        def slot(name: str) -> str:
            return f"\x00{name}\x00"

        answerable = [OrganisationView(slot(f"o{i}c"), slot(f"o{i}n")) for i in range(answering)]
        links = [[slot(f"o{i}{s.value}") for s in AnswerStatus] for i in range(answering)]
        info_only = [OrganisationView(slot(f"i{i}c"), slot(f"i{i}n")) for i in range(informed)]
        every = [
            OrganisationView(slot(f"a{i}c"), slot(f"a{i}n")) for i in range(answering + informed)
        ]
        context = self._context(slot("name"), answerable, links, info_only, every, slot("access"))
        return render_service_email(self.settings, "alert", context)

    def _envelope(self, delivery: ClaimedDelivery) -> Envelope:
        return Envelope(
            bounce_address(delivery.bounce_key, self.settings.mail_domain), delivery.recipient_email
        )

    def compose(self, delivery: ClaimedDelivery) -> OutgoingMessage:
        rendered = self._render(delivery)
        data = self.skeleton.assemble(
            subject=rendered.subject,
            to=(delivery.recipient_name, delivery.recipient_email),
            # Alert-only contacts get a reply address too: a question they
            # send back is traced to them and answered, not lost.
            reply_to=reply_address(delivery.reply_key, self.settings.mail_domain),
            message_id=f"<{delivery.message_id}>",
            text=rendered.text,
            html=rendered.html,
        )
        return OutgoingMessage(self._envelope(delivery), data)

    def compose_whole(self, delivery: ClaimedDelivery) -> OutgoingMessage:
        """The same email built whole with the email package and rendered
        directly: slower, and the reference ``compose`` is tested against."""
        rendered = self.render_directly(delivery)
        headers = MessageHeaders(
            sender=self.sender,
            to=address(delivery.recipient_name, delivery.recipient_email),
            message_id=delivery.message_id,
            date=self.now,
            reply_to=reply_address(delivery.reply_key, self.settings.mail_domain),
            extra={"X-Mailflow-Alert": self.alert.reference},
        )
        return OutgoingMessage(self._envelope(delivery), bytes(build_message(rendered, headers)))

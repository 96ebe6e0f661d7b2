"""A one-off email (a confirm request, "not recorded", a receipt, a
notice) is written from prepared pieces (``compose_message``): it is the
same email, once parsed, as the email package builds whole
(``build_message``), headers encoded and folded as it does, and values
that could start a header of their own refused as it refuses them."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow.answers.reply_emails import AnswerLines
from mailflow.config import Settings, load_settings
from mailflow.core.mail.messages import (
    MessageHeaders,
    address,
    build_message,
    compose_message,
    thread_headers,
)
from mailflow.core.mail.one_off import TheirMessage, ThreadHeaders, one_off_email
from mailflow.core.mail.skeleton import fold_address, fold_header, mailbox
from mailflow.core.mail.templates import RenderedEmail
from mailflow.core.models import Alert, User

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
LONG_WORD = "x" * 300
ALERT = Alert(
    id=1,
    reference="CC-4720",
    title="Remote code execution in Example VPN Gateway",
    deadline_at=NOW + timedelta(hours=48),
)


@pytest.fixture(scope="module")
def mail_settings() -> Settings:
    return load_settings(
        environ={},
        overrides={
            "database_url": "sqlite://",
            "secret_key": "composing-test-" + "k" * 40,
            "mail_domain": "alerts.test",
            "from_address": "Alerts Désk <alerts@alerts.test>",
        },
    )


def email_package_fold(name: str, value: object) -> bytes:
    message = EmailMessage(policy=SMTP)
    message[name] = value
    return SMTP.fold_binary(name, message[name])


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def assert_same_email(rendered: RenderedEmail, headers: MessageHeaders) -> None:
    """Same headers in the same order, decoded; same parts with the same
    encodings; same decoded bodies.  Only the boundary differs."""
    pieces, whole = compose_message(rendered, headers), bytes(build_message(rendered, headers))
    a, b = parsed(pieces), parsed(whole)
    assert a.defects == b.defects == []

    def header_list(message: EmailMessage) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in message.items() if k != "Content-Type"]

    assert header_list(a) == header_list(b)
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    for part_a, part_b in zip(a.iter_parts(), b.iter_parts(), strict=True):
        assert part_a.get_content_type() == part_b.get_content_type()
        assert part_a["Content-Transfer-Encoding"] == part_b["Content-Transfer-Encoding"]
        assert part_a.get_content_charset() == part_b.get_content_charset() == "utf-8"
        assert part_a.get_content() == part_b.get_content()
    # The message's own headers, folded, are the email package's bytes.
    assert pieces.split(b"\r\nMIME-Version:")[0] == whole.split(b"\r\nMIME-Version:")[0]
    # No line longer than SMTP carries (RFC 5321 4.5.3.1.6).
    assert max(len(line) for line in pieces.split(b"\r\n")) <= 998


def confirm_context(name: str) -> dict[str, object]:
    return {
        "recipient_name": name,
        "alert": ALERT,
        "link": "https://mailflow.test/c/abc",
        "expires_at": NOW + timedelta(hours=24),
        "answers": [AnswerLines("Riverside NHS Trust", "RXA", "In progress", [("Note", "é")])],
    }


def receipt_context(name: str) -> dict[str, object]:
    return {
        "recipient_name": name,
        "for_answerer": False,
        "answerer_name": "Raj Patel",
        "answerer_email": "raj@riverside.example",
        "alert": ALERT,
        "lines": [AnswerLines("Riverside NHS Trust", "RXA", "Complete", [])],
        "recorded_at": NOW,
        "within_deadline": True,
        "needs_update": False,
    }


def problem_context(name: str) -> dict[str, object]:
    return {
        "recipient_name": name,
        "alert": ALERT,
        "reason": "The first line did not name an organisation.",
        "problems": [],
        "form": None,
    }


def notice_context(name: str) -> dict[str, object]:
    return {"recipient_name": name, "until": NOW, "at": NOW}


KINDS = {
    "confirm": confirm_context,
    "receipt": receipt_context,
    "reply_problem": problem_context,
    "locked_out": notice_context,
}
NAMES = [
    "Ann Lee",
    "",
    'Zoë "Z" O\'Neil & <Co>',
    "Dr. J. Smith, PhD",
    "Ann  Lee ",
    "Ørjan Ångström-Þórsdóttir von Müller-Lüdenscheidt zu Großbritannien und Nordirland",
    "=?utf-8?q?Eve?=",
    LONG_WORD,
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_each_kind_is_the_email_the_email_package_builds(
    mail_settings: Settings, kind: str, name: str
) -> None:
    user = User(id=7, name=name, email="ann.lee@riverside.example")
    thread = ThreadHeaders("alert.7@alerts.test", TheirMessage("<r1.ann@client.example>", "k" * 32))
    rendered, headers = one_off_email(
        mail_settings, template=kind, context=KINDS[kind](name), to=user, now=NOW, thread=thread
    )
    assert_same_email(rendered, headers)


SUBJECTS = [
    "Confirm your answer: CC-4720 Remote code execution in Example VPN Gateway",
    "Réponse enregistrée : CC-4720 exécution de code à distance — passerelle VPN « Exemple »",
    "Recorded: CC-4720 " + ", ".join(f"ORG{i} complete" for i in range(30)),
    f"A word too long for a line: {LONG_WORD} and after it",
    "Looks encoded: =?utf-8?q?hello?= but is not",
    "",
]
BODIES = [
    "Dear Ann,\n\nPlain.\n",
    "Dear Zoë,\n\nNot ASCII, and no final line break",
    f"A line too long for SMTP: {'y' * 1200}\n",
    "A lone\rcarriage return, trailing spaces   \n\tand a tab\n",
    "",
]


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("body", BODIES)
def test_subjects_and_bodies_are_encoded_as_the_email_package_encodes_them(
    mail_settings: Settings, subject: str, body: str
) -> None:
    rendered = RenderedEmail(subject=subject, text=body, html=f"<p>{body}</p>")
    headers = MessageHeaders(
        sender=mail_settings.from_header,
        to=address("Ann Lee", "ann@riverside.example"),
        message_id="1.2.3@alerts.test",
        date=NOW,
        reply_to="reply+abc@alerts.test",
        extra=thread_headers("a" * 150 + "@alerts.test", "<" + "b" * 150 + "@client.example>")
        | {"X-Mailflow-Alert": "CC-4720"},
    )
    assert_same_email(rendered, headers)


def test_non_ascii_names_and_subjects_are_encoded_words_in_ascii_headers(
    mail_settings: Settings,
) -> None:
    user = User(id=7, name=NAMES[2], email="ann@riverside.example")
    rendered, headers = one_off_email(
        mail_settings, template="receipt", context=receipt_context(user.name), to=user, now=NOW
    )
    raw = compose_message(RenderedEmail(SUBJECTS[1], rendered.text, rendered.html), headers)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head
    message = parsed(raw)
    assert message["Subject"] == SUBJECTS[1]
    assert message["To"].addresses[0].display_name == NAMES[2]
    assert message["From"].addresses[0].display_name == "Alerts Désk"


@pytest.mark.parametrize(
    "hostile",
    [
        "Ann\r\nBcc: eve@example.org",
        "Ann\nBcc: eve@example.org",
        "Ann\rBcc: eve@example.org",
        "Ann\u2028Bcc: eve@example.org",
    ],
)
def test_a_line_break_in_any_value_is_refused_by_both(
    mail_settings: Settings, hostile: str
) -> None:
    rendered = RenderedEmail(subject="Hello", text="Hi\n", html="<p>Hi</p>\n")

    def headers(**values: object) -> MessageHeaders:
        defaults: dict[str, object] = {
            "sender": mail_settings.from_header,
            "to": address("Ann", "ann@riverside.example"),
            "message_id": "1@alerts.test",
            "date": NOW,
        }
        return MessageHeaders(**(defaults | values))  # type: ignore[arg-type]

    for bad_headers, bad_rendered in [
        (headers(reply_to=hostile), rendered),
        (headers(extra={"X-Mailflow-Alert": hostile}), rendered),
        (headers(), RenderedEmail(hostile, "x", "x")),
    ]:
        with pytest.raises(ValueError):
            build_message(bad_rendered, bad_headers)
        with pytest.raises(ValueError):
            compose_message(bad_rendered, bad_headers)
    # A name with CR or LF is refused as an address; another line break
    # in a name is encoded, the same way by both.
    if "\r" in hostile or "\n" in hostile:
        for make_address in (address, mailbox):
            with pytest.raises(ValueError):
                make_address(hostile, "ann@riverside.example")
    else:
        to = headers(to=address(hostile, "ann@riverside.example"))
        assert_same_email(rendered, to)
        assert parsed(compose_message(rendered, to))["Bcc"] is None


def test_each_email_has_a_boundary_of_its_own(mail_settings: Settings) -> None:
    user = User(id=7, name="Ann", email="ann@riverside.example")
    rendered, headers = one_off_email(
        mail_settings, template="locked_out", context=notice_context("Ann"), to=user, now=NOW
    )
    first, second = (parsed(compose_message(rendered, headers)) for _ in range(2))
    assert first.get_boundary() != second.get_boundary()


# Header values written as they are must be what the email package writes.
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=90)
ANY_TEXT = st.text(max_size=90).filter(lambda v: "\r" not in v and "\n" not in v)
ATOMS = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,25}", fullmatch=True)
SIMPLE_ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}", ATOMS, ATOMS)
HEADER_NAMES = st.sampled_from(
    [
        *("Subject", "From", "To", "Reply-To", "Message-ID", "Date"),
        *("In-Reply-To", "References", "Auto-Submitted", "X-Mailflow-Alert"),
    ]
)
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def assert_folded_as_the_email_package_folds(name: str, value: str) -> None:
    try:
        expected = email_package_fold(name, value)
    except ValueError:
        with pytest.raises(ValueError):
            fold_header(name, value)
        return
    assert fold_header(name, value) == expected


@EXAMPLES
@given(HEADER_NAMES, st.one_of(ASCII, ANY_TEXT))
def test_any_value_is_folded_as_the_email_package_folds_it(name: str, value: str) -> None:
    assert_folded_as_the_email_package_folds(name, value)


@EXAMPLES
@given(st.sampled_from(["From", "To", "Reply-To"]), st.one_of(ASCII, ANY_TEXT), SIMPLE_ADDRESSES)
def test_a_mailbox_is_folded_as_the_email_package_folds_it(
    name: str, display_name: str, addr: str
) -> None:
    as_object = mailbox(display_name, addr)
    try:
        expected = email_package_fold(name, as_object)
    except ValueError:
        with pytest.raises(ValueError):
            fold_address(name, as_object)
        return
    assert fold_address(name, as_object) == expected


@EXAMPLES
@given(SIMPLE_ADDRESSES, SIMPLE_ADDRESSES)
def test_message_ids_are_folded_as_the_email_package_folds_them(first: str, second: str) -> None:
    assert_folded_as_the_email_package_folds("Message-ID", f"<{first}>")
    assert_folded_as_the_email_package_folds("In-Reply-To", f"<{second}>")
    assert_folded_as_the_email_package_folds("References", f"<{first}> <{second}>")


@EXAMPLES
@given(st.datetimes(timezones=st.one_of(st.none(), st.timezones())))
def test_dates_are_folded_as_the_email_package_folds_them(when: datetime) -> None:
    assert_folded_as_the_email_package_folds("Date", format_datetime(when))

"""What the person wrote in a reply: the quoted original, Outlook's header
block, attributions and signatures are cut away, for every real client in
the shared corpus and for messages built to be awkward (odd charsets, huge
bodies, deep or wide MIME trees).

Each corpus reply is also rewritten so that the person answers
``RXA: complete`` while the quoted original carries conflicting answers
(``RXA: not applicable: x``, ``RXB: complete``): the reply form must read
exactly the person's answer.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from datetime import date
from email.message import EmailMessage, Message

import pytest

from mailflow.answers.reply_form import parse_reply
from mailflow.answers.statuses import AnswerStatus
from mailflow.gateway.reply_subject import reply_subject, subject_of
from mailflow.gateway.reply_text import MAX_CHARS, written_text
from tests.support.mail import html_message, plain_message
from tests.support.reply_corpus import (
    ANSWER,
    CONFLICT,
    CORPUS,
    HTML_WORDS,
    STANDARD_HTML_WORDS,
    STANDARD_WORDS,
    corpus,
    corpus_names,
    rewrite_standard,
)

TODAY = date(2026, 11, 26)
HELD = ["RXA", "RXB"]
# Seconds for one call of written_text: far under what a quadratic path
# takes on these inputs (minutes), and above what a loaded 2-core machine
# needs for the linear one (2.1 s was seen in CI).
TIME_LIMIT = 5.0
FIVE_MB = 5 * 1024 * 1024

# The device signature line that written_text drops, as it is asked to, but
# that a corpus ".expected" file keeps (talon, whose corpus it is, keeps it).
DEVICE_SIGNATURE = re.compile(r"^Sent from my \w+$")


# ------------------------------------------------------------------ helpers


def has_html_part(name: str) -> bool:
    if not CORPUS.is_dir():
        return True  # keep the placeholder
    return html_part(parse((CORPUS / "standard" / name).read_bytes())) is not None


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def html_part(message: EmailMessage) -> str | None:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            content = part.get_content()
            assert isinstance(content, str)
            return content
    return None


def timed(message: EmailMessage) -> str:
    start = time.perf_counter()
    text = written_text(message)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT, f"written_text took {elapsed:.2f}s"
    assert isinstance(text, str)
    return text


def non_blank(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def assert_answer_is_only_rxa_complete(text: str) -> None:
    answer_lines = [
        line.strip() for line in text.splitlines() if re.match(r"\s*(?:RX[A-Z]|ALL)\b", line)
    ]
    assert answer_lines == [ANSWER], text
    for conflict in CONFLICT:
        assert conflict not in text
    answers = parse_reply(text, held=HELD, today=TODAY)
    assert [(a.organisation, a.status) for a in answers] == [("RXA", AnswerStatus.COMPLETE)]


# -------------------------------------------------------- corpus is covered


def test_every_corpus_file_is_one_the_tests_read() -> None:
    root = corpus()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative in ("README.md", "LICENSE-talon"):
            continue
        if relative.startswith("standard/") and path.suffix == ".expected":
            assert path.with_suffix(".eml").is_file(), relative
            continue
        assert (relative.startswith("standard/") and path.suffix == ".eml") or (
            relative.startswith("html/") and path.suffix == ".html"
        ), f"{relative}: a corpus file no test reads"


# ---------------------------------------------------- standard/*.eml replies


def expected_standard(name: str) -> str:
    expected = corpus() / "standard" / name.replace(".eml", ".expected")
    if not expected.is_file():
        return STANDARD_WORDS
    # The one expected output that keeps the device signature: written_text
    # drops "Sent from my iPhone", so it returns the person's words without it.
    words = expected.read_text(encoding="utf-8").strip()
    assert STANDARD_WORDS in words
    kept = [line for line in words.splitlines() if not DEVICE_SIGNATURE.match(line.strip())]
    return "\n".join(kept).strip()


@pytest.mark.parametrize("name", corpus_names("standard", "*.eml"))
def test_standard_reply_is_what_the_person_wrote(name: str) -> None:
    raw = (corpus() / "standard" / name).read_bytes()

    text = timed(parse(raw))

    assert text == expected_standard(name)
    for quoted in ("Hi", "wrote", "From:", "Sent:"):
        assert quoted not in text.replace("Hello", "")


@pytest.mark.parametrize("name", corpus_names("standard", "*.eml"))
def test_standard_reply_answer_ignores_the_quote(name: str) -> None:
    raw = rewrite_standard((corpus() / "standard" / name).read_bytes(), name)

    text = timed(parse(raw))

    assert non_blank(text) == [ANSWER]
    assert_answer_is_only_rxa_complete(text)


@pytest.mark.parametrize("name", [n for n in corpus_names("standard", "*.eml") if has_html_part(n)])
def test_html_alternative_of_standard_reply_on_its_own(name: str) -> None:
    raw = (corpus() / "standard" / name).read_bytes()
    markup = html_part(parse(raw))
    rewritten = html_part(parse(rewrite_standard(raw, name)))
    assert markup is not None and rewritten is not None

    assert timed(html_message(markup)) == STANDARD_HTML_WORDS.get(name, STANDARD_WORDS)
    text = timed(html_message(rewritten))
    assert non_blank(text) == [ANSWER]
    assert_answer_is_only_rxa_complete(text)


# ------------------------------------------------------- html/*.html bodies


@pytest.mark.parametrize("name", corpus_names("html", "*.html"))
def test_html_reply_is_what_the_person_wrote(name: str) -> None:
    markup = (corpus() / "html" / name).read_text(encoding="utf-8")

    text = timed(html_message(markup))

    assert non_blank(text) == HTML_WORDS
    for quoted in ("Hello! How are you?", "Sasha", "Alexander", "From", "wrote", "@"):
        assert quoted not in text


@pytest.mark.parametrize("name", corpus_names("html", "*.html"))
def test_html_reply_answer_ignores_the_quote(name: str) -> None:
    markup = (corpus() / "html" / name).read_text(encoding="utf-8")
    markup, person = re.subn(re.escape(HTML_WORDS[0]), ANSWER, markup, count=1)
    markup, quoted = re.subn(r"Hello! How are you\?", CONFLICT[0], markup)
    markup = markup.replace("Sasha.", CONFLICT[1])
    assert person == 1 and quoted >= 1

    text = timed(html_message(markup))

    assert non_blank(text) == [ANSWER, *HTML_WORDS[1:]]
    assert_answer_is_only_rxa_complete(text)


# ------------------------------------------------- quoting without markers

ALERT_QUOTE = "\n".join(
    [
        "High severity alert CC-4567: patch the VPN appliance.",
        "Answer at the top of your reply, one line per organisation:",
        "RXA: not applicable: x",
        "RXB: complete",
    ]
)


@pytest.mark.parametrize(
    "header",
    [
        "________________________________\n"
        "From: Cyber alerts <alerts@x>\nSent: 24 November 2026 09:15\n"
        "To: Ann Smith <ann@trust.nhs.uk>\nSubject: [CC-4567] Patch the VPN appliance",
        "*From:* Cyber alerts <alerts@x>\n*Sent:* Tuesday, November 24, 2026 9:15:00 AM\n"
        "*To:* Ann Smith <ann@trust.nhs.uk>\n*Subject:* [CC-4567] Patch the VPN appliance",
        "Von: Cyber alerts <alerts@x>\nGesendet: Dienstag, 24. November 2026 09:15\n"
        "An: Ann Smith\nBetreff: [CC-4567] Patch the VPN appliance",
        "De : Cyber alerts <alerts@x>\nEnvoyé : mardi 24 novembre 2026 09:15\n"
        "À : Ann Smith\nObjet : [CC-4567] Patch the VPN appliance",
        "-----Original Message-----\nFrom: Cyber alerts [mailto:alerts@x]\n"
        "Sent: 24 November 2026 09:15",
        "-----Original Message-----",
    ],
    ids=["outlook", "outlook-mobile-bold", "outlook-german", "outlook-french", "original", "bare"],
)
def test_outlook_quote_without_markers_is_cut(header: str) -> None:
    message = plain_message(f"{ANSWER}\n\nThanks,\nAnn\n\n{header}\n\n{ALERT_QUOTE}\n")

    text = timed(message)

    assert non_blank(text) == [ANSWER, "Thanks,", "Ann"]
    assert_answer_is_only_rxa_complete(text)


def test_outlook_web_html_reply_is_cut_at_the_reply_header() -> None:
    markup = (
        f'<html><head><style>p {{margin:0}}</style></head><body><div dir="ltr">{ANSWER}</div>'
        '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Cyber alerts &lt;alerts@x&gt;<br>'
        "<b>Sent:</b> 24 November 2026 09:15</div>"
        f"<div>{'<br>'.join(CONFLICT)}</div></body></html>"
    )

    text = timed(html_message(markup))

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


def test_marked_html_signatures_are_dropped() -> None:
    markup = (
        f'<div dir="ltr">{ANSWER}<br clear="all"><br>-- <br>'
        '<div dir="ltr" class="gmail_signature">Ann Smith<br>RXB: complete</div></div>'
        f'<div class="moz-signature">Ann<br>{CONFLICT[0]}</div>'
    )

    text = timed(html_message(markup))

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


def test_apple_mail_html_reply_drops_the_cited_blockquote() -> None:
    markup = (
        f"<html><body><div>{ANSWER}</div><div><br></div><div>Sent from my iPhone</div>"
        '<div><br><blockquote type="cite">On 24 Nov 2026, at 09:15, Cyber alerts '
        "&lt;alerts@x&gt; wrote:<br><br></blockquote></div>"
        f'<blockquote type="cite"><div>{"<br>".join(CONFLICT)}</div></blockquote></body></html>'
    )

    text = timed(html_message(markup))

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


# ------------------------------------------------------------ attributions


@pytest.mark.parametrize(
    "attribution",
    [
        "On Tue, 24 Nov 2026 at 09:15, Cyber alerts <alerts@x>\nwrote:",
        "On Tue, 24 Nov 2026 at 09:15, Cyber alerts <alerts@x> wrote:",
        "On 24 Nov 2026, at 09:15, Cyber alerts <alerts@x> wrote:",
        "Am 24.11.2026 um 09:15 schrieb Cyber alerts <alerts@x>:",
        "Le mar. 24 nov. 2026 à 09:15, Cyber alerts <alerts@x> a écrit :",
        '24.11.2026, 09:15, "Cyber alerts" <alerts@x>:',
    ],
    ids=["gmail-wrapped", "gmail", "apple", "german", "french", "yandex"],
)
def test_attribution_and_quoted_lines_are_cut(attribution: str) -> None:
    quote = "\n".join(f"> {line}" for line in ALERT_QUOTE.splitlines())
    message = plain_message(f"{ANSWER}\n\n{attribution}\n\n{quote}\n>\n")

    text = timed(message)

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


def test_wrapped_attribution_over_unmarked_quote_cuts_to_the_end() -> None:
    message = plain_message(
        f"{ANSWER}\n\nOn Tue, 24 Nov 2026 at 09:15, Cyber alerts <alerts@x>\nwrote:\n\n"
        f"{ALERT_QUOTE}\n"
    )

    text = timed(message)

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


def test_answer_below_the_quote_is_kept() -> None:
    message = plain_message(
        "On 24/11/2026 09:15, Cyber alerts wrote:\n> RXA: not applicable: x\n> RXB: complete\n"
        f"\n{ANSWER}\n"
    )

    assert timed(message) == ANSWER


# ------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    "signature",
    [
        "Sent from my iPhone",
        "Sent from my Android",
        "Sent from my Samsung Galaxy smartphone.",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "Get Outlook for Android",
        "-- \nAnn Smith\nRXB: complete",
    ],
)
def test_device_and_delimited_signatures_are_cut(signature: str) -> None:
    message = plain_message(f"{ANSWER}\n\n{signature}\n\n> RXA: not applicable: x\n")

    text = timed(message)

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


def test_flowed_text_answer_wrapped_by_the_client_is_one_line() -> None:
    message = raw_message(
        b"RXA: in progress: patching this weekend, \r\nexpected 5 December\r\n\r\n"
        b"> RXB: complete\r\n",
        'text/plain; charset="utf-8"; format="flowed"',
    )

    text = timed(message)

    assert text == "RXA: in progress: patching this weekend, expected 5 December"
    (answer,) = parse_reply(text, held=HELD, today=TODAY)
    assert answer.status is AnswerStatus.IN_PROGRESS
    assert answer.expected_on == date(2026, 12, 5)


# ----------------------------------------------------------------- garbage


def raw_message(body: bytes, content_type: str, encoding: str = "8bit") -> EmailMessage:
    return parse(
        b"Subject: Re: Alert\r\nMIME-Version: 1.0\r\n"
        + f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n".encode()
        + body
    )


@pytest.mark.parametrize("charset", ["x-unknown", "zlib", "base64", "utf-8\\x00", ""])
def test_unknown_or_odd_charset_is_read_as_utf8(charset: str) -> None:
    words = f"{ANSWER}\nPatched \u2013 caf\u00e9 \u2713 ".encode() + b"\xff\xfe"
    message = raw_message(words + b"\n\n> RXB: complete\n", f'text/plain; charset="{charset}"')

    text = timed(message)

    assert text == f"{ANSWER}\nPatched \u2013 caf\u00e9 \u2713 \ufffd\ufffd"
    assert_answer_is_only_rxa_complete(text)


def test_unknown_charset_in_html_body() -> None:
    body = f"<p>{ANSWER}</p><blockquote>RXB: complete</blockquote>\xe9".encode("latin-1")
    text = timed(raw_message(body, 'text/html; charset="x-unknown"'))

    assert non_blank(text) == [ANSWER, "\ufffd"]


def test_broken_base64_does_not_raise() -> None:
    text = timed(raw_message(b"UlhBOiBjb21wbGV0ZQ=\n!!!*&^%\n", "text/plain", "base64"))

    assert isinstance(text, str)


class UnreadablePart(EmailMessage):
    def get_payload(self, *args: object, **kwargs: object) -> object:
        raise ValueError("cannot be read")


def test_a_part_that_cannot_be_read_is_skipped() -> None:
    unreadable = UnreadablePart()
    unreadable["Content-Type"] = "text/plain"
    message = EmailMessage()
    message["Content-Type"] = 'multipart/mixed; boundary="b"'
    message.set_payload([unreadable, plain_message(f"{ANSWER}\n")])

    assert timed(message) == ANSWER


def test_blank_plain_part_falls_back_to_html() -> None:
    message = plain_message("\n \n")
    message.add_alternative(f"<p>{ANSWER}</p><blockquote>{CONFLICT[1]}</blockquote>", "html")

    assert timed(message) == ANSWER


def test_message_with_no_body_is_empty() -> None:
    assert timed(parse(b"Subject: Re: Alert\r\n\r\n")) == ""
    assert timed(parse(b"Subject: Re: Alert\r\nContent-Type: multipart/mixed\r\n\r\n")) == ""
    assert timed(EmailMessage()) == ""
    only_attachment = EmailMessage()
    only_attachment.add_attachment(b"RXA: complete", maintype="text", subtype="plain")
    assert timed(only_attachment) == ""


def test_five_megabyte_plain_body() -> None:
    quote = "> RXA: not applicable: x\n> RXB: complete\n" * (FIVE_MB // 40)
    message = plain_message(
        f"{ANSWER}\n\nOn Tue, 24 Nov 2026 at 09:15, Cyber alerts <alerts@x> wrote:\n{quote}"
    )

    text = timed(message)

    assert text == ANSWER


def test_five_megabyte_single_line_is_capped() -> None:
    message = raw_message(f"{ANSWER}\n".encode() + b"x" * FIVE_MB, "text/plain")

    text = timed(message)

    assert text.splitlines()[0] == ANSWER
    assert len(text) <= MAX_CHARS


def test_five_megabyte_html_body() -> None:
    quoted = f"<div>{CONFLICT[0]}</div><div>{CONFLICT[1]}</div>" * (FIVE_MB // 60)
    message = html_message(f"<div>{ANSWER}</div><blockquote>{quoted}</blockquote>")

    text = timed(message)

    assert text == ANSWER


@pytest.mark.parametrize(
    "unit", ["<a ", "<!--", "<![", "</", "<", "&#", "<div class='", "<style>", "<p>x"]
)
def test_malformed_html_takes_linear_time(unit: str) -> None:
    tail = unit * (FIVE_MB // len(unit))
    message = html_message(f"<div>{ANSWER}</div>{tail}")

    text = timed(message)

    assert text.splitlines()[0] == ANSWER


def nested(depth: int, leaf: Message) -> EmailMessage:
    part: Message = leaf
    for level in range(depth):
        outer = EmailMessage()
        outer["Content-Type"] = f'multipart/mixed; boundary="level-{level}"'
        outer.set_payload([part])
        part = outer
    assert isinstance(part, EmailMessage)
    return part


def test_multipart_nested_a_thousand_deep() -> None:
    leaf = plain_message(f"{ANSWER}\n\n> RXB: complete\n")

    text = timed(nested(1000, leaf))

    assert text == ANSWER


def test_a_message_that_contains_itself_ends() -> None:
    looped = EmailMessage()
    looped["Content-Type"] = 'multipart/mixed; boundary="loop"'
    looped.set_payload([looped])

    assert timed(looped) == ""


def test_ten_thousand_mime_parts() -> None:
    body = plain_message(f"{ANSWER}\n\n> RXB: complete\n")
    message = EmailMessage()
    message["Content-Type"] = 'multipart/mixed; boundary="wide"'
    # The reply's text comes last, after 9,999 attachments.
    message.set_payload([*(image_attachment(n) for n in range(9999)), body])

    text = timed(message)

    assert text == ANSWER


def image_attachment(number: int) -> EmailMessage:
    part = EmailMessage()
    part["Content-Type"] = "image/png"
    part["Content-Disposition"] = f'attachment; filename="{number}.png"'
    part.set_payload("iVBORw0KGgo=")
    return part


# ------------------------------------------------- below our own quoted email

OUTLOOK_HEADER = (
    "________________________________\n"
    "From: Cyber alerts <alerts@x>\nSent: 24 November 2026 09:15\n"
    "To: Ann Smith <ann@trust.nhs.uk>\nSubject: [HIGH] CC-4567: Patch the VPN appliance\n"
)
OUR_FOOTER = "--\nCyber alerts\nYou receive this because you are listed for RXA, RXB."


def test_text_below_an_outlook_quote_of_our_own_email_is_kept() -> None:
    message = plain_message(
        f"\nAnn\n\n{OUTLOOK_HEADER}\n{ALERT_QUOTE}\n\n{OUR_FOOTER}\n\n{ANSWER}\n"
    )

    text = timed(message)

    assert non_blank(text) == ["Ann", ANSWER]
    assert_answer_is_only_rxa_complete(text)


def test_text_below_someone_elses_unmarked_quote_is_not_read() -> None:
    # Without our footer nothing says where the original ends.
    message = plain_message(f"{ANSWER}\n\n{OUTLOOK_HEADER}\n{ALERT_QUOTE}\n\nRXB: complete\n")

    assert timed(message) == ANSWER


def test_a_signature_on_top_does_not_hide_the_answer_below_our_email() -> None:
    message = plain_message(
        f"-- \nAnn Smith\nRXB: complete\n\n{OUTLOOK_HEADER}\n{ALERT_QUOTE}\n\n"
        f"{OUR_FOOTER}\n\n{ANSWER}\n"
    )

    assert timed(message) == ANSWER


def test_outlook_web_html_answer_below_our_email_is_kept() -> None:
    markup = (
        '<div id="appendonsend"></div><div id="divRplyFwdMsg"><b>From:</b> Cyber alerts</div>'
        f"<div>{'<br>'.join(CONFLICT)}<p>You receive this because you are listed for RXA.</p>"
        "<p>This message was sent automatically by Cyber alerts.</p></div>"
        f"<div>{ANSWER}</div>"
    )

    text = timed(html_message(markup))

    assert text == ANSWER
    assert_answer_is_only_rxa_complete(text)


# ------------------------------------------------------------------ subject


@pytest.mark.parametrize(
    ("subject", "written"),
    [
        (
            "RE: AW: [HIGH] CC-4720: Patch the VPN - respond by Saturday 28 November 2026 "
            "at 09:00 GMT - Complete",
            "Complete",
        ),
        ("[EXTERNAL] Re: [HIGH] CC-4720: patch the   VPN", ""),
        ("Fwd: RXA complete", "RXA complete"),
        ("Re: CC-4720 n/a - no VPN here", "n/a - no VPN here"),
        ("Re: Patch the VPN", ""),
        # Today's subjects: our tag first, and the title shortened for a phone.
        ("Re: [CC-4720 HIGH] Respond by Tue 1 Dec 14:00: Patch the... - done", "done"),
        ("RE: [CC-4720 HIGH] Respond by Tue 1 Dec 14:00: Patch the VPN", ""),
        ("Re: [CC-4720 HIGH] Patch the VPN in progress", "in progress"),
        ("Re: [CC-4720 HIGH] Respond by Tue 1 Dec 14:00: Patch... RXA done", "Patch... RXA done"),
    ],
)
def test_the_subject_keeps_only_what_the_person_added(subject: str, written: str) -> None:
    message = plain_message("")
    message.replace_header("Subject", subject)

    assert reply_subject(subject_of(message), reference="CC-4720", title="Patch the VPN") == written


def test_a_missing_or_unreadable_subject_is_empty() -> None:
    ours = {"reference": "CC-4720", "title": "Patch the VPN"}
    assert reply_subject(subject_of(EmailMessage()), **ours) == ""
    broken = parse(b"Subject: =?utf-8?q?RXA_complete?=\xff\xfe=?bad?=\r\n\r\nbody\r\n")
    assert isinstance(reply_subject(subject_of(broken), **ours), str)

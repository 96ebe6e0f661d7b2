"""What the person wrote in a reply, with the quoted original and signatures
cut away.

People answer an alert by replying from Outlook, Gmail, Apple Mail, phones
and so on.  ``written_text`` takes the parsed reply and returns only the lines
the person typed, ready for :func:`mailflow.answers.reply_form.parse_reply`.

Library choice: written with the standard library only.  Of the candidates,
talon is unmaintained and pulls in numpy/scipy/scikit-learn/lxml, and
email-reply-parser and mail-parser-reply work on plain text only and both fail
this project's reply corpus (Android's Russian attribution, Thunderbird's
bottom post); for HTML see :mod:`mailflow.gateway.reply_html`.

How it works:

1. The body: the first text/plain part (not an attachment, not inside an
   attached message), else the first text/html part turned into text.  Parts
   are walked without recursion and at most ``MAX_PARTS`` of them; a part that
   cannot be decoded is skipped; an unknown charset is read as UTF-8 with
   replacement characters; at most ``MAX_CHARS`` characters are considered.
2. For HTML (:mod:`mailflow.gateway.reply_html`) the quote containers are
   removed before the markup becomes text: every ``<blockquote>``, Gmail's
   ``gmail_quote``, Thunderbird's ``moz-cite-prefix``, Yahoo's and Proton's
   quote divs; Outlook web's ``#appendonsend`` / ``#divRplyFwdMsg`` or
   Hotmail's ``#stopSpelling`` start the original.  ``<head>``, ``<style>``,
   ``<script>`` and signatures marked as such (``gmail_signature``,
   ``moz-signature``) are dropped; ``<br>``, ``<p>``, ``<div>`` and the other
   blocks become line breaks.
3. In the text: lines quoted with ``>`` are dropped, with the attribution above
   them (``On <date>, <name> wrote:``, also wrapped over two lines and in other
   languages, or ``<date>, <name> <address>:``); text below them is kept.  An
   original quoted without ``>`` starts at an Outlook header block (``From: /
   Sent: / To: / Subject:``, also localised, with the ``____`` line above
   it), an ``-----Original Message-----`` line, an attribution followed by
   unmarked text, or Outlook web's reply header; it runs to the end, unless
   it is a copy of one of our own emails: then the text below its footer
   ("You receive this because ...", "This message was sent automatically
   by ...") is the person's again, for those who write below the alert.
   After a ``-- `` delimiter, lines are a signature, up to such an original.
   "Sent from my iPhone"-style lines are dropped.

Step 3 is :mod:`mailflow.gateway.quoted_text`; what the person wrote in the
Subject is read by :mod:`mailflow.gateway.reply_subject`.
"""

from __future__ import annotations

from email.message import EmailMessage, Message

from mailflow.gateway.quoted_text import cut_quoted
from mailflow.gateway.reply_html import html_to_text

__all__ = ["MAX_CHARS", "MAX_PARTS", "written_text"]

#: The most characters of a body that are looked at.
MAX_CHARS = 1_000_000
#: The most MIME parts that are looked at (a guard against absurd messages).
MAX_PARTS = 20_000


def written_text(message: EmailMessage) -> str:
    """The text the person wrote in ``message``, without the quoted original,
    device signatures ("Sent from my iPhone") or a ``-- `` signature.
    Returns "" when there is no readable text body; never raises for a
    malformed, oversized or oddly encoded message."""
    plain, html_body = _find_bodies(message)
    if plain is not None and plain.strip():
        text = plain
    elif html_body is not None:
        text = html_to_text(html_body)
    else:
        return ""
    return cut_quoted(text[:MAX_CHARS])


# ------------------------------------------------------------------ MIME


def _find_bodies(message: Message) -> tuple[str | None, str | None]:
    """The first text/plain and the first text/html body, decoded, walking
    the parts in order without recursion."""
    plain: str | None = None
    html_body: str | None = None
    stack: list[Message] = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        try:
            if part.get_content_maintype() == "message":
                continue  # an attached or forwarded message is not the reply
            if part.is_multipart():
                children = part.get_payload()
                if isinstance(children, list):
                    stack.extend(
                        child for child in reversed(children) if isinstance(child, Message)
                    )
                continue
            if part.get_content_disposition() == "attachment":
                continue
            content_type = part.get_content_type()
            if content_type == "text/plain" and plain is None:
                plain = _decode_part(part)
                if plain is not None and _param(part, "format") == "flowed":
                    plain = _unflow(plain, delsp=_param(part, "delsp") == "yes")
                if plain is not None and plain.strip():
                    break
            elif content_type == "text/html" and html_body is None:
                html_body = _decode_part(part)
        except Exception:  # noqa: S112 - a part that cannot be read is skipped
            continue
    return plain, html_body


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    return value.strip().lower() if isinstance(value, str) else ""


def _decode_part(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    # UTF-8 takes at most four bytes a character.
    payload = payload[: MAX_CHARS * 4]
    charset = part.get_content_charset() or "utf-8"
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit text labelled ASCII is nearly always UTF-8
    try:
        # A codec that is not a text encoding (zlib, base64) raises LookupError.
        text = payload.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        text = payload.decode("utf-8", "replace")
    text = text[:MAX_CHARS].replace("\x00", "")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unflow(text: str, *, delsp: bool) -> str:
    """Join the soft line breaks of format=flowed text (RFC 3676) outside
    quoted lines, so an answer wrapped by the mail client is one line again."""
    out: list[str] = []
    pending: list[str] = []
    for line in text.split("\n"):
        if line.startswith(">"):
            if pending:
                out.append("".join(pending))
                pending = []
            out.append(line)
            continue
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            pending.append(line[:-1] if delsp else line)
            continue
        pending.append(line)
        out.append("".join(pending))
        pending = []
    if pending:
        out.append("".join(pending))
    return "\n".join(out)

"""Emails assembled from prepared pieces instead of built whole with the
email package.

Building a message with ``EmailMessage`` parses every header it is set
into an object (the header registry), and again each MIME header that
``set_content`` and ``add_alternative`` write, then generates the message
line by line: about 1 ms an email, most of it header parsing, which was a
tenth of a worker's time processing replies and most of alert fan-out.
Here the MIME frame of a text and an HTML part is folded by the email
package once per process, around a placeholder boundary; a header whose
value is plain ASCII that fits on a line is written as it is, which is
what the email package writes for it too (a test checks this over
generated values); any other value (non-ASCII, long, anything that looks
like an encoded word) is folded by the email package, as before, and
remembered, since such values (subjects, names) repeat.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from functools import cache, lru_cache

# Values the email package writes as they are, when they fit on a line.
# An unstructured value: printable ASCII words separated by single spaces
# (anything else, such as tabs, runs of spaces, control or non-ASCII
# characters, is the email package's to fold).  A structured header is
# parsed and written again, so only its plainest forms are passed.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_DISPLAY_NAME = rf'(?:{_ATEXT}+(?: {_ATEXT}+)*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])+")'
_MAILBOX = re.compile(rf"{_ADDR_SPEC}|{_DISPLAY_NAME} <{_ADDR_SPEC}>")
_PLAIN_VALUE: dict[str, re.Pattern[str]] = {
    "from": _MAILBOX,
    "to": _MAILBOX,
    "reply-to": _MAILBOX,
    "message-id": re.compile(rf"<{_ADDR_SPEC}>"),
    "date": re.compile(
        r"[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [1-9][0-9]{3} [0-9:]{8} [+-][0-9]{4}"
    ),
}
_UNSTRUCTURED = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_STRUCTURED = {"sender", "cc", "bcc", "content-type", "content-disposition", "mime-version"}
_MAX_LINE = 78


def fold_header(name: str, value: str) -> bytes:
    """The header as the email package's SMTP policy folds it, line breaks
    included.  A line break in the value is refused: it would start a
    header of the sender's choosing."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the {name} header")
    return _as_it_is(name, value) or _fold_with_email_package(name, value)


def fold_address(name: str, address: Address) -> bytes:
    """An address header as the email package folds it when it is set to
    the ``Address`` object, whose display name it encodes whatever
    characters it holds (an ``Address`` refuses CR and LF itself)."""
    return _as_it_is(name, str(address)) or _fold_address_with_email_package(
        name, address.display_name, address.username, address.domain
    )


def _as_it_is(name: str, value: str) -> bytes | None:
    """The header line when the email package writes the value as it is."""
    line = f"{name}: {value}\r\n"
    key = name.lower()
    plain = _PLAIN_VALUE.get(key, None if key in _STRUCTURED else _UNSTRUCTURED)
    # "=?" could open an encoded word, which the email package decodes
    # and folds again.
    if plain and len(line) <= _MAX_LINE + 2 and "=?" not in value and plain.fullmatch(value):
        return line.encode("ascii")
    return None


@lru_cache(maxsize=4096)
def _fold_with_email_package(name: str, value: str) -> bytes:
    head = EmailMessage(policy=SMTP)
    # The email package refuses, with a ValueError, the other characters
    # that split a line (str.splitlines).
    head[name] = value
    return SMTP.fold_binary(name, head[name])


@lru_cache(maxsize=4096)
def _fold_address_with_email_package(
    name: str, display_name: str, username: str, domain: str
) -> bytes:
    head = EmailMessage(policy=SMTP)
    head[name] = Address(display_name=display_name, username=username, domain=domain)
    return SMTP.fold_binary(name, head[name])


def forget_folded_headers() -> None:
    """Empty the memory of headers the email package folded (a benchmark
    measures a fresh process)."""
    _fold_with_email_package.cache_clear()
    _fold_address_with_email_package.cache_clear()


# SMTP's limit is 1000 octets a line with its CRLF (RFC 5321 4.5.3.1.6).
_MAX_7BIT_LINE = 998
_NOT_7BIT = re.compile(r"[^\t\n\x20-\x7e]")


def transfer_encoding(text: str) -> str:
    """7bit when the text is plain ASCII in lines SMTP carries as they are,
    else quoted-printable: either way a person (or grep) reading the raw
    message reads the words, as they could not in base64."""
    if _NOT_7BIT.search(text) or max(map(len, text.split("\n"))) > _MAX_7BIT_LINE:
        return "quoted-printable"
    return "7bit"


def _canonical(text: str) -> bytes:
    # The canonical form (RFC 2046): CRLF line breaks, and a final one, as
    # the email package writes a text part (it breaks lines where
    # bytes.splitlines does, so a lone CR is a line break too).
    return b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"


def _quoted_printable(canonical: bytes) -> bytes:
    # binascii keeps the CRLF line breaks it is given and breaks longer
    # lines softly at 76 characters, as RFC 2045 asks; it is written in C.
    return binascii.b2a_qp(canonical, quotetabs=False, istext=True, header=False)


_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "7bit": lambda canonical: canonical,
    "quoted-printable": _quoted_printable,
}


def new_boundary() -> str:
    """A MIME boundary nobody can guess, so that no text we are given can
    contain it.  "=_" cannot appear in quoted-printable either."""
    return f"=_mailflow_{secrets.token_hex(16)}"


_PLACEHOLDER = new_boundary().encode("ascii")


class AlternativeFrame:
    """The MIME part of a multipart/alternative email with a plain-text and
    an HTML part, around one boundary: its MIME-Version and Content-Type
    headers, each part's headers (for either transfer encoding), the
    delimiters and the closing one."""

    def __init__(
        self,
        mime_head: bytes,
        before_text: dict[str, bytes],
        before_html: dict[str, bytes],
        closing: bytes,
    ) -> None:
        self.mime_head = mime_head
        self.before_text = before_text
        self.before_html = before_html
        self.closing = closing

    def with_boundary(self, boundary: str) -> AlternativeFrame:
        """The same frame around another boundary (of the same length)."""
        new = boundary.encode("ascii")
        if len(new) != len(_PLACEHOLDER):
            raise ValueError("a boundary of another length would fold differently")

        def swap(piece: bytes) -> bytes:
            return piece.replace(_PLACEHOLDER, new)

        return AlternativeFrame(
            swap(self.mime_head),
            {cte: swap(piece) for cte, piece in self.before_text.items()},
            {cte: swap(piece) for cte, piece in self.before_html.items()},
            swap(self.closing),
        )

    def body(self, text: str, html: str) -> bytes:
        """Everything after the message's own headers."""
        text_cte, html_cte = transfer_encoding(text), transfer_encoding(html)
        return b"".join(
            (
                self.mime_head,
                self.before_text[text_cte],
                _ENCODERS[text_cte](_canonical(text)),
                self.before_html[html_cte],
                _ENCODERS[html_cte](_canonical(html)),
                self.closing,
            )
        )


def _folded(headers: dict[str, str]) -> bytes:
    message = EmailMessage(policy=SMTP)
    for name, value in headers.items():
        message[name] = value
    return b"".join(SMTP.fold_binary(name, value) for name, value in message.items())


@cache
def placeholder_frame() -> AlternativeFrame:
    """The frame around the placeholder boundary, folded by the email
    package once per process."""
    boundary = _PLACEHOLDER.decode("ascii")
    content_type = f'multipart/alternative; boundary="{boundary}"'

    def part_head(subtype: str, cte: str) -> bytes:
        return _folded(
            {"Content-Type": f'text/{subtype}; charset="utf-8"', "Content-Transfer-Encoding": cte}
        )

    delimiter = b"\r\n--" + _PLACEHOLDER + b"\r\n"
    return AlternativeFrame(
        mime_head=_folded({"MIME-Version": "1.0", "Content-Type": content_type}),
        # The blank line after the headers; the CRLF before a delimiter
        # belongs to it (RFC 2046 5.1.1).
        before_text={
            cte: b"\r\n" + delimiter[2:] + part_head("plain", cte) + b"\r\n" for cte in _ENCODERS
        },
        before_html={cte: delimiter + part_head("html", cte) + b"\r\n" for cte in _ENCODERS},
        closing=b"\r\n--" + _PLACEHOLDER + b"--\r\n",
    )


def alternative_body(text: str, html: str, boundary: str | None = None) -> bytes:
    """The MIME-Version and Content-Type headers, the blank line and the two
    parts of a multipart/alternative email, around a fresh boundary unless
    one is given."""
    return placeholder_frame().with_boundary(boundary or new_boundary()).body(text, html)


def mailbox(name: str, email: str) -> Address:
    """The address "Name <local@domain>", refusing a line break anywhere."""
    if any("\r" in part or "\n" in part for part in (name, email)):
        raise ValueError("line break in an address")
    username, _, domain = email.rpartition("@")
    return Address(display_name=name, username=username, domain=domain)


class AlternativeSkeleton:
    """A multipart/alternative message for sending in bulk: the headers
    every recipient shares, and the MIME frame around one boundary, are
    folded once; per recipient only the personal headers and the two
    bodies are added."""

    def __init__(self, shared: dict[str, str], auto_submitted: str) -> None:
        shared = shared | {"Auto-Submitted": auto_submitted, "X-Auto-Response-Suppress": "All"}
        self.shared_head = b"".join(fold_header(name, value) for name, value in shared.items())
        self.frame = placeholder_frame().with_boundary(new_boundary())

    def assemble(
        self,
        *,
        subject: str,
        to: tuple[str, str],
        reply_to: str,
        message_id: str,
        text: str,
        html: str,
    ) -> bytes:
        return b"".join(
            (
                self.shared_head,
                fold_header("Subject", subject),
                fold_address("To", mailbox(*to)),
                fold_header("Reply-To", reply_to),
                fold_header("Message-ID", message_id),
                self.frame.body(text, html),
            )
        )

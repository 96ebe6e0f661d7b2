"""The header block of an inbound message, read from the raw bytes before
the ``email`` package sees them.

Two uses.  First, limits: an oversized header block, too many fields, or an
address field long enough to make the ``email`` package's address parser
crawl (its time grows faster than the length: 28 KB of addresses take 0.1 s,
120 KB take 1.5 s, 1.4 MB took a minute) are refused, at DATA time by the
SMTP edge and again by the processing job for mail that came another way.
Second, the headers our trust decisions rest on (``From``, ``Message-ID``,
``Authentication-Results``) are taken as the raw bytes carry them, never as
a lenient parser repaired or decoded them.

Everything here is a pure function of bytes, linear in their length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_FIELDS = 1000
MAX_FIELD_BYTES = 64 * 1024
# Address fields are parsed by the email package, whose address-list parser
# is quadratic: 16 KiB (some 500 addresses) parse in about 50 ms.
MAX_ADDRESS_FIELD_BYTES = 16 * 1024
ADDRESS_FIELDS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "return-path",
        "disposition-notification-to",
    }
)
# A declared MIME boundary per nesting level: the email package checks
# every body line against every open boundary, so depth multiplies the
# cost of each line.
MAX_MIME_BOUNDARIES = 50
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class HeaderField:
    """One field: its name in lower case and its unfolded value, decoded as
    UTF-8 (RFC 6532) with undecodable bytes kept as surrogates."""

    name: str
    value: str


@dataclass(frozen=True)
class HeaderBlock:
    fields: tuple[HeaderField, ...]
    # Why the block is not a clean sequence of fields (a line that is
    # neither a field nor a continuation); None when it is.
    malformed: str | None = None

    def values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [f.value for f in self.fields if f.name == wanted]


# Line breaks as the email package's parser splits them: CRLF, CR or LF.
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_BLANK_LINE = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")


def _header_end(raw: bytes, limit: int) -> int | None:
    """Where the header block ends (just after its last line break),
    looking no further than ``limit`` bytes; None if not found."""
    if _LINE_BREAK.match(raw):
        return 0
    found = _BLANK_LINE.search(raw, 0, limit + 4)
    if found is None:
        return None
    return found.start() + (2 if raw.startswith(b"\r\n", found.start()) else 1)


def _raw_lines(head: bytes) -> list[bytes]:
    lines = _LINE_BREAK.split(head)
    if lines and not lines[-1]:
        lines.pop()  # what follows the last line break
    return lines


def _field_sizes(raw: bytes) -> tuple[int, list[tuple[bytes, int]]] | str:
    """The header block's size and each field's (name, size), or why it is
    beyond the limits."""
    end = _header_end(raw, MAX_HEADER_BYTES)
    if end is None:
        if len(raw) > MAX_HEADER_BYTES:
            return f"the header block is larger than {MAX_HEADER_BYTES // 1024} KiB"
        end = len(raw)
    fields: list[tuple[bytes, int]] = []
    for line in _raw_lines(raw[:end]):
        if line[:1] in (b" ", b"\t") and fields:
            name, size = fields[-1]
            fields[-1] = (name, size + len(line))
        else:
            fields.append((line.split(b":", 1)[0].strip().lower(), len(line)))
            if len(fields) > MAX_HEADER_FIELDS:
                return f"the header has more than {MAX_HEADER_FIELDS} fields"
    return end, fields


def limits_problem(raw: bytes) -> str | None:
    """Why this message's header block is beyond what we read, or None.
    Looks at no more than the header block, so the SMTP edge can run it on
    every message."""
    sizes = _field_sizes(raw)
    if isinstance(sizes, str):
        return sizes
    _, fields = sizes
    for name, size in fields:
        if size > MAX_FIELD_BYTES:
            return f"a header field is longer than {MAX_FIELD_BYTES // 1024} KiB"
        if size > MAX_ADDRESS_FIELD_BYTES and name.decode("latin-1") in ADDRESS_FIELDS:
            what = name.decode("latin-1")
            return f"the {what} header is longer than {MAX_ADDRESS_FIELD_BYTES // 1024} KiB"
    return None


def mime_limits_problem(raw: bytes) -> str | None:
    """Why the message's MIME nesting is beyond what we read, or None.  A
    scan of the whole message: for the processing job, not the SMTP edge."""
    if len(_BOUNDARY.findall(raw)) > MAX_MIME_BOUNDARIES:
        return f"the message declares more than {MAX_MIME_BOUNDARIES} MIME boundaries"
    return None


def _is_field_name(name: bytes) -> bool:
    # RFC 5322 2.2: printable US-ASCII except the colon, no spaces.
    return bool(name) and all(33 <= byte <= 126 for byte in name)


def read_header_block(raw: bytes) -> HeaderBlock:
    """The fields of the header block, unfolded (RFC 5322 2.2.3: a line
    break followed by white space is removed, the white space kept).
    Callers check :func:`limits_problem` first."""
    end = _header_end(raw, len(raw))
    head = raw if end is None else raw[:end]
    fields: list[tuple[bytes, list[bytes]]] = []
    malformed = None
    for number, line in enumerate(_raw_lines(head), start=1):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
            continue
        name, colon, rest = line.partition(b":")
        if not colon or not _is_field_name(name):
            malformed = malformed or f"line {number} of the header is not a header field"
            continue
        fields.append((name, [rest]))
    return HeaderBlock(
        tuple(
            HeaderField(
                name.decode("ascii").lower(),
                b"".join(parts).decode("utf-8", "surrogateescape").strip(" \t"),
            )
            for name, parts in fields
        ),
        malformed,
    )

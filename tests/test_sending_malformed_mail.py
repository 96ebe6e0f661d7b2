"""The inbound reader against generated mail: header fields an attacker
chooses (encoded-words, folding, stray CR/LF, controls, repeated and
missing fields) over a MIME tree of their shape.  However odd the bytes,
reading returns (never raises), takes bounded time, and names a sender
only when the raw header holds exactly that address."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow.gateway.reading import InboundReading, read_inbound

# Generous for a loaded CI machine: a normal message reads in milliseconds,
# and the hostile ones the size limits exist for took minutes.
SECONDS_PER_MESSAGE = 2.0

NAMES = st.sampled_from(
    [
        "From",
        "from",
        "FROM",
        "To",
        "Cc",
        "Reply-To",
        "Sender",
        "Message-ID",
        "Subject",
        "Auto-Submitted",
        "Precedence",
        "Authentication-Results",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
        "Delivered-To",
        "Return-Path",
        "X-Junk",
    ]
)
PIECES = st.sampled_from(
    [
        "ann@riverside.example",
        "mallory@evil.example",
        "Ann Lee",
        "<",
        ">",
        "<>",
        "@",
        ",",
        ";",
        ":",
        '"',
        "(",
        ")",
        "\\",
        " ",
        "\t",
        "\r\n ",
        "\r\n",
        "\n",
        "\r",
        "\x00",
        "\x1b[2J",
        "=?utf-8?q?ann=40riverside=2Eexample?=",
        "=?utf-8?b?YW5uQHJpdmVyc2lkZS5leGFtcGxl?=",
        "=?x-unknown?q?=0D=0A?=",
        "=?utf-8?q?",
        "?=",
        "mx.alerts.test; dmarc=pass header.from=riverside.example",
        "multipart/mixed; boundary=b",
        'multipart/alternative; boundary="b"',
        "text/plain; charset=utf-8",
        "message/rfc822",
        "base64",
        "quoted-printable",
        "auto-replied",
        "RXA: complete",
        "\u00e9",
        "\u202e",
    ]
)
VALUES = st.lists(PIECES, max_size=12).map("".join) | st.text(max_size=40)
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=12)


@st.composite
def mime_body(draw: st.DrawFn, depth: int = 0) -> str:
    if depth < 3 and draw(st.booleans()):
        boundary = draw(st.sampled_from(["b", "b1", "=_x", ""]))
        parts = draw(st.lists(mime_body(depth + 1), max_size=4))
        head = f'Content-Type: multipart/{draw(st.sampled_from(["mixed", "alternative", "report"]))}; boundary="{boundary}"\r\n\r\n'  # noqa: E501
        inner = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
        ending = draw(st.sampled_from([f"--{boundary}--\r\n", "", f"--{boundary}"]))
        return head + inner + ending
    fields = draw(FIELDS)
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return head + "\r\n" + draw(VALUES)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    fields = draw(FIELDS)
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    raw = (head + draw(mime_body())).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        # Arbitrary bytes spliced in anywhere.
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=30)) + raw[at:]
    return raw


def read_in_bounded_time(raw: bytes, authserv_id: str | None) -> InboundReading:
    started = time.monotonic()
    reading = read_inbound(
        raw, envelope_from="someone@client.example", source="smtp", authserv_id=authserv_id
    )
    assert time.monotonic() - started < SECONDS_PER_MESSAGE
    return reading


@settings(
    max_examples=200,
    database=None,
    deadline=None,  # timed by the test itself, with a margin for a busy machine
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(messages(), st.sampled_from([None, "mx.alerts.test"]))
def test_any_message_is_read_without_an_error_in_bounded_time(
    raw: bytes, authserv_id: str | None
) -> None:
    reading = read_in_bounded_time(raw, authserv_id)

    assert isinstance(reading, InboundReading)
    if reading.sender is not None:
        # Named only when written as such, in the one From field there is.
        assert reading.sender.encode() in raw.lower()
        assert raw.lower().count(b"\nfrom:") + raw.lower().startswith(b"from:") >= 1
        assert reading.sender.count("@") >= 1 and "=?" not in reading.sender
    if reading.message_id is not None:
        assert reading.message_id.encode() in raw
        assert not any(c.isspace() or ord(c) < 32 for c in reading.message_id)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=2000))
def test_any_bytes_at_all_are_read_without_an_error(raw: bytes) -> None:
    read_in_bounded_time(raw, "mx.alerts.test")

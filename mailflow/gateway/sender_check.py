"""Who sent a message, as strictly as the raw header and our own mail
server say it (invariants 5 and 7), and its Message-ID if it is one.

A lenient reading of ``From`` is how a reply gets attributed to the wrong
person: ``ann@alpha.example <mallory@evil.example>``, an RFC 2047
encoded-word that decodes to Ann's address, two ``From`` fields, or two
mailboxes in one, have each been read as Ann by a forgiving parser.  Here a
``From`` counts only when there is exactly one such field, holding exactly
one mailbox, that the ``email`` package parses without a single defect, and
whose address stands in the raw header as written (not decoded from an
encoded-word).  Anything else has no sender, and gets no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import AddressHeader, BaseHeader
from email.policy import default

from mailflow.gateway.raw_headers import HeaderBlock

MAX_MESSAGE_ID = 250
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
# RFC 5322 3.6.4 msg-id, without folding or comments: no white space, no
# controls, so it can be copied into our own In-Reply-To as it is.
_MESSAGE_ID = re.compile(rf"<{_ATEXT}@(?:{_ATEXT}|\[[!-Z^-~]*\])>")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_COMMENT = re.compile(r"\([^()]*\)")
_AROUND_EQUALS = re.compile(r"\s*([=/])\s*")


@dataclass(frozen=True)
class Sender:
    """The sender's address in lower case, or why there is none."""

    address: str | None
    problem: str | None = None

    @property
    def domain(self) -> str:
        return (self.address or "").rpartition("@")[2]


def strict_sender(headers: HeaderBlock) -> Sender:
    if headers.malformed:
        return Sender(None, f"the header block is malformed ({headers.malformed})")
    values = headers.values("From")
    if len(values) != 1:
        return Sender(None, f"{len(values)} From headers, not exactly one")
    value = values[0]
    if _CONTROL.search(value) or _has_surrogates(value):
        return Sender(None, "the From header holds control characters or bytes that are not UTF-8")
    try:
        header = default.header_factory("from", value)
    except (HeaderParseError, ValueError, IndexError) as exc:
        return Sender(None, f"the From header cannot be parsed ({type(exc).__name__})")
    assert isinstance(header, BaseHeader)
    if header.defects:
        return Sender(None, "the From header is malformed")
    assert isinstance(header, AddressHeader)
    mailboxes = [a for group in header.groups for a in group.addresses]
    if len(header.groups) != 1 or header.groups[0].display_name is not None or len(mailboxes) != 1:
        return Sender(None, "the From header does not hold exactly one mailbox")
    mailbox = mailboxes[0]
    address = mailbox.addr_spec
    if not mailbox.username or not mailbox.domain or "=?" in address:
        return Sender(None, "the From address is incomplete or encoded")
    # Compared with the raw text: an address that appears only once an
    # encoded-word is decoded was never written as an address.
    if address.lower() not in value.lower():
        return Sender(None, "the From address is not written as it reads")
    return Sender(address.lower())


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in value)


def message_id(headers: HeaderBlock) -> str | None:
    """The one Message-ID, if it is a well-formed msg-id; otherwise None
    (then our reply carries no In-Reply-To rather than a broken one)."""
    values = headers.values("Message-ID")
    if len(values) != 1:
        return None
    value = values[0].strip(" \t")
    if len(value) > MAX_MESSAGE_ID or not _MESSAGE_ID.fullmatch(value):
        return None
    return value


def dmarc_problem(headers: HeaderBlock, authserv_id: str, sender_domain: str) -> str | None:
    """Why DMARC does not vouch for the sender, by the verdict of our own
    server (``authserv_id``) alone; None when it passed for exactly the
    sender's domain.

    Our MTA prepends its Authentication-Results above its own Received
    field, so only fields above the first Received count (a sender can
    write fields with our name in them, but only below that), and of
    those the first naming our authserv-id that reports DMARC decides.
    Only ``pass`` with ``header.from`` equal to the From domain counts:
    ``none``, ``permerror`` and missing results do not."""
    for value in _fields_above_first_received(headers, "authentication-results"):
        results = _results_from(value, authserv_id)
        if results is None:
            continue
        dmarc = [props for method, props in results if method == "dmarc"]
        if not dmarc:
            continue
        for props in dmarc:
            verdict = props.get("", "")
            if verdict != "pass":
                return f"DMARC {verdict or 'unknown'}, as reported by our own mail server"
            checked = props.get("header.from", "").strip('"').rstrip(".").lower()
            if checked != sender_domain.rstrip(".").lower():
                return f"DMARC passed for {checked or 'no domain'}, not the sender's domain"
        return None
    return "no DMARC result from our own mail server"


def _fields_above_first_received(headers: HeaderBlock, name: str) -> list[str]:
    """The values of fields called ``name`` above the first Received field:
    those the last server to handle the message (our own) added."""
    found = []
    for field in headers.fields:
        if field.name == "received":
            break
        if field.name == name:
            found.append(field.value)
    return found


def _results_from(value: str, authserv_id: str) -> list[tuple[str, dict[str, str]]] | None:
    """The results in one Authentication-Results field (RFC 8601) as
    (method, properties) with the result under "", if the field is
    ``authserv_id``'s; None if it is someone else's."""
    for _ in range(10):  # comments nest; a field nested deeper is not ours
        stripped = _COMMENT.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    else:
        return None
    parts = value.split(";")
    server = parts[0].split()
    if not server or server[0].lower() != authserv_id.lower():
        return None
    results = []
    for part in parts[1:]:
        words = _AROUND_EQUALS.sub(r"\1", part).split()
        if not words or "=" not in words[0]:
            continue
        method, _, result = words[0].partition("=")
        props = {"": result.lower()}
        for word in words[1:]:
            key, equals, prop = word.partition("=")
            if equals:
                props[key.lower()] = prop
        results.append((method.split("/")[0].lower(), props))
    return results

"""What the IMAP poller (``gateway/imap.py``) says to the server, and the
plain values around it: what is done to a message once it is stored, where
a message was delivered to, how UIDs are grouped into fetches, and how a
failure is told without the password.

The poller keeps the loop, the connection and the checkpoint; this module
holds the single IMAP commands of a pass, each a function of the client.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any, Literal

from imapclient.exceptions import (  # type: ignore[import-untyped]
    IMAPClientError,
    LoginError,
)

from mailflow.config import ImapConfig
from mailflow.gateway.reading import DELIVERY_HEADERS

log = logging.getLogger(__name__)

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
FLAGGED = b"\\Flagged"


class ImapPassError(Exception):
    """The server answered something a pass cannot work with."""


@dataclass(frozen=True)
class AfterStore:
    """What to do to a message once it is stored (MAILFLOW_IMAP_AFTER)."""

    action: Literal["seen", "delete", "move"]
    folder: str | None = None

    @classmethod
    def parse(cls, text: str) -> AfterStore:
        if text == "seen":
            return cls("seen")
        if text == "delete":
            return cls("delete")
        if text.startswith("move:") and len(text) > len("move:"):
            return cls("move", text[len("move:") :])
        raise ValueError('expected "seen", "delete" or "move:FOLDER"')

    def describe(self) -> str:
        return f"move to {self.folder}" if self.action == "move" else self.action


@dataclass
class PassResult:
    """What one pass did: messages newly stored, and messages the
    after-store action was applied to (including ones stored earlier whose
    action had not been done)."""

    stored: int = 0
    finished: int = 0
    # Too large to store: flagged and left in the mailbox.
    set_aside: int = 0


# ----------------------------------------------------------- the headers


def _header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]


def envelope_recipients(raw: bytes) -> list[str]:
    """The addresses a message was delivered to, as far as its headers say:
    the delivery headers processing reads (``DELIVERY_HEADERS``: Delivered-To,
    X-Original-To, Envelope-To, To, then Cc), each in the order written,
    without repeats.  IMAP keeps no envelope, so this is the nearest thing.
    Never fails: a header that does not parse gives no address."""
    text = _header_block(raw).decode("utf-8", "replace").replace("\x00", "")
    headers = HeaderParser(policy=compat32).parsestr(text, headersonly=True)
    found: list[str] = []
    for name in DELIVERY_HEADERS:
        values = [str(value) for value in headers.get_all(name, [])]
        for _, address in getaddresses(values):
            address = address.strip()
            if address and address not in found:
                found.append(address)
    return found


# ------------------------------------------------------- the IMAP commands


def search_uids(client: Any, criteria: list[str]) -> list[int]:
    return sorted(int(uid) for uid in client.search(criteria))


def unfinished_uids(client: Any, after: AfterStore, last_uid: int) -> list[int]:
    """Messages at or below the checkpoint (so stored) on which the
    after-store action has not been done yet."""
    below = f"1:{last_uid}"
    if after.action == "seen":
        return search_uids(client, ["UID", below, "UNSEEN"])
    if after.action == "move":
        # Copied and marked deleted already, when the server has no
        # MOVE: copying again would leave two copies.
        return search_uids(client, ["UID", below, "NOT", "DELETED"])
    return search_uids(client, ["UID", below])


def message_sizes(client: Any, uids: Sequence[int]) -> dict[int, int]:
    if not uids:
        return {}
    fetched = client.fetch(list(uids), ["RFC822.SIZE"])
    return {
        int(uid): int(data.get(b"RFC822.SIZE") or 0)
        for uid, data in fetched.items()
        if isinstance(data, dict)
    }


def message_bodies(client: Any, uids: Sequence[int]) -> dict[int, bytes]:
    if not uids:
        return {}
    fetched = client.fetch(list(uids), ["BODY.PEEK[]"])
    bodies: dict[int, bytes] = {}
    for uid, data in fetched.items():
        raw = data.get(b"BODY[]") if isinstance(data, dict) else None
        if not isinstance(raw, bytes):
            raise ImapPassError(f"FETCH BODY.PEEK[] of UID {uid} gave no message")
        bodies[int(uid)] = raw
    return bodies


def apply_after(client: Any, uid: int, after: AfterStore) -> None:
    """Set \\Seen, delete, or move one stored message (a move's folder
    must exist: see ``create_folder``)."""
    if after.action == "seen":
        client.add_flags([uid], [SEEN], silent=True)
    elif after.action == "delete":
        client.add_flags([uid], [DELETED], silent=True)
        expunge(client, uid)
    elif client.has_capability("MOVE"):
        client.move([uid], after.folder)
    else:
        client.copy([uid], after.folder)
        client.add_flags([uid], [DELETED], silent=True)
        expunge(client, uid)


def expunge(client: Any, uid: int) -> None:
    if client.has_capability("UIDPLUS"):
        client.uid_expunge([uid])
    else:
        client.expunge()


def create_folder(client: Any, folder: str) -> bool:
    """Create ``folder`` unless it exists; whether it was created now."""
    if client.folder_exists(folder):
        return False
    try:
        client.create_folder(folder)
    except IMAPClientError:
        # Another client may have created it meanwhile.
        if not client.folder_exists(folder):
            raise
        return False
    return True


def announces_mail(response: Any) -> bool:
    """An IDLE response saying the mailbox has grown (``* n EXISTS``) or
    that the server is leaving (``* BYE``)."""
    if not isinstance(response, tuple) or len(response) < 2:
        return False
    return bool(response[1] == b"EXISTS" or response[0] == b"BYE")


def shut_down(client: Any) -> None:
    try:
        client.shutdown()
    except Exception:  # the socket is gone either way
        log.debug("IMAP connection shutdown failed", exc_info=True)


# ------------------------------------------------------- telling failures


def describe_failure(exc: BaseException, target: ImapConfig) -> str:
    """One line saying what went wrong, never showing the password."""
    text = redacted(_plain(str(exc)), target)
    if isinstance(exc, LoginError):
        return (
            f"IMAP login to {target.server} as {target.username} was refused "
            f"({text}); check MAILFLOW_IMAP_URL"
        )
    if isinstance(exc, IMAPClientError):
        # The server's own words (imaplib's class names say nothing).
        return f"IMAP {target.key}: {text}"
    return f"IMAP {target.key}: {type(exc).__name__}: {text}"


def redacted(text: str, target: ImapConfig) -> str:
    password = target.password
    return text.replace(password, "***") if password else text


def _plain(text: str) -> str:
    """A server reply that imaplib passed on as ``b'...'``, as text."""
    if len(text) >= 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            return text
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return text


# ------------------------------------------------------ grouping the UIDs


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def groups_within(uids: Sequence[int], sizes: dict[int, int], limit: int) -> Iterator[list[int]]:
    """Consecutive runs of ``uids`` whose messages together stay within
    ``limit`` bytes (a run holds at least one UID)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group

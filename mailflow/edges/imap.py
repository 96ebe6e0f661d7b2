"""The IMAP poller: copies new messages from a mailbox into the database.

For organisations that deliver replies to an IMAP mailbox rather than to
our SMTP server.  One pass:

1. connect and log in (the connection is kept between passes), SELECT the
   mailbox and read its UIDVALIDITY;
2. load the checkpoint (the UIDVALIDITY last seen and the highest UID whose
   message is stored); a different UIDVALIDITY means the UIDs we knew mean
   nothing any more, so the mailbox is read again from UID 1 (the same mail
   stored twice is recognised later, by Message-ID and digest);
3. for every message above the checkpoint, FETCH ``BODY.PEEK[]`` (which
   leaves \\Seen alone) and, in one transaction, store the raw bytes, queue
   their processing and advance the checkpoint;
4. only after that commit, do what MAILFLOW_IMAP_AFTER says to the message
   (set \\Seen, move it, or delete it).

A process that dies between 3 and 4 leaves a stored message unflagged;
the next pass finds it (below the checkpoint but still unseen, or still in
the mailbox) and finishes it without storing it again.  Between passes the
poller IDLEs when the server offers it, else sleeps.  Any error drops the
connection and the poller tries again, backing off from 1 s to 60 s.

The edge never judges content: whatever bytes the server holds are stored,
up to MAILFLOW_INBOUND_MAX_BYTES, the limit the SMTP edge applies.  A larger
message (by its RFC822.SIZE, checked before fetching it) is never fetched
whole nor stored: it is flagged (\\Flagged, \\Seen) and left in the mailbox
for a person to look at, with one log line, and the checkpoint moves past it.
"""

from __future__ import annotations

import ast
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any, Literal

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import (  # type: ignore[import-untyped]
    IMAPClientError,
    LoginError,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import ConfigError
from mailflow.domain.inbound import ImapOrigin, imap_message_stored, store_inbound_message
from mailflow.domain.models import ImapCheckpoint, InboundMessage
from mailflow.mail.inbound_mail import DELIVERY_HEADERS
from mailflow.workers.runtime import Runtime

log = logging.getLogger(__name__)

# UIDs looked at per round, and at most this many bytes of messages held in
# memory at once (a single larger message is still fetched, alone).
BATCH_UIDS = 50
FETCH_BYTES = 8 * 1024 * 1024
SOCKET_TIMEOUT_SECONDS = 60.0
BACKOFF_START_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# RFC 2177: a client should re-issue IDLE at least every 29 minutes.
IDLE_MAX_SECONDS = 25 * 60.0
# How often a waiting poller looks at its stop event.
STOP_CHECK_SECONDS = 1.0

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
FLAGGED = b"\\Flagged"


class ImapPassError(Exception):
    """The server answered something a pass cannot work with."""


# -------------------------------------------------------------- settings


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


# ------------------------------------------------------------ the poller


@dataclass
class PassResult:
    """What one pass did: messages newly stored, and messages the
    after-store action was applied to (including ones stored earlier whose
    action had not been done)."""

    stored: int = 0
    finished: int = 0
    # Too large to store: flagged and left in the mailbox.
    set_aside: int = 0


class ImapPoller:
    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        if settings.imap_url is None:
            raise ConfigError("MAILFLOW_IMAP_URL", "not set")
        self.target = settings.imap_url
        try:
            self.after = AfterStore.parse(settings.imap_after)
        except ValueError as exc:
            raise ConfigError("MAILFLOW_IMAP_AFTER", str(exc)) from exc
        if self.after.action == "move" and self.after.folder == self.target.mailbox:
            raise ConfigError(
                "MAILFLOW_IMAP_AFTER",
                f"moving messages to {self.after.folder}, the mailbox polled, "
                "would store them again and again",
            )
        self.runtime = runtime
        self._client: Any = None
        self._folder_ready = False

    @property
    def key(self) -> str:
        return self.target.key

    # ----------------------------------------------------------- running

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set: a pass, then wait for new mail; on
        any error, drop the connection and try again after a growing pause."""
        delay = BACKOFF_START_SECONDS
        log.info("IMAP poller for %s started (after storing: %s)", self.key, self.after.describe())
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                    delay = BACKOFF_START_SECONDS
                    self._wait_for_mail(stop)
                except Exception as exc:
                    self._disconnect()
                    self._log_failure(exc, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        finally:
            self.close()
            log.info("IMAP poller for %s stopped", self.key)

    def poll_once(self) -> PassResult:
        """One pass over the mailbox.  Raises on any failure, having
        dropped the connection; nothing is flagged that is not stored."""
        try:
            return self._pass()
        except BaseException:
            self._disconnect()
            raise

    def close(self) -> None:
        """Log out (safe to call twice)."""
        self._disconnect(polite=True)

    def __enter__(self) -> ImapPoller:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- a pass

    def _pass(self) -> PassResult:
        client = self._connection()
        selected = client.select_folder(self.target.mailbox)
        try:
            uidvalidity = int(selected[b"UIDVALIDITY"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ImapPassError(f"SELECT {self.target.mailbox} gave no UIDVALIDITY") from exc
        last_uid = self._start_from(uidvalidity)

        # Stored (at or below the checkpoint) but not yet flagged, moved or
        # deleted: a process stopped between the commit and the action.
        unfinished = self._unfinished(client, last_uid) if last_uid else []
        # UID SEARCH UID n:* always matches the highest UID, even below n.
        new = [uid for uid in self._search(client, ["UID", f"{last_uid + 1}:*"]) if uid > last_uid]
        candidates = sorted(set(unfinished) | set(new))

        result = PassResult()
        max_bytes = self.runtime.settings.inbound_max_bytes
        for batch in _chunks(candidates, BATCH_UIDS):
            stored = self._stored_uids(uidvalidity, batch)
            to_fetch = [uid for uid in batch if uid not in stored]
            sizes = self._sizes(client, to_fetch)
            too_large = {uid for uid in to_fetch if sizes.get(uid, 0) > max_bytes}
            for uid in too_large:
                sizes[uid] = 0  # never fetched: takes no room in a group
            for group in _groups(batch, sizes, FETCH_BYTES):
                wanted = [uid for uid in group if uid not in stored and uid not in too_large]
                bodies = self._bodies(client, wanted)
                for uid in group:
                    if uid in too_large or len(bodies.get(uid, b"")) > max_bytes:
                        if uid > last_uid:
                            # Met for the first time (later passes that see
                            # it again, below the checkpoint, skip it quietly).
                            self._set_aside(client, uid, max_bytes)
                            self._commit(uidvalidity, uid, None)
                            last_uid = uid
                            result.set_aside += 1
                        continue
                    if uid in stored:
                        if uid > last_uid:
                            self._commit(uidvalidity, uid, None)
                    elif uid in bodies:
                        if self._commit(uidvalidity, uid, bodies[uid]):
                            result.stored += 1
                    else:
                        # Expunged by someone else since the search.
                        continue
                    last_uid = max(last_uid, uid)
                    # Only now, with the raw copy committed.
                    self._apply_after(client, uid)
                    result.finished += 1
        if result.stored or result.finished:
            log.info(
                "IMAP %s: %d new messages stored, %d finished (%s)",
                self.key,
                result.stored,
                result.finished,
                self.after.describe(),
            )
        return result

    def _set_aside(self, client: Any, uid: int, max_bytes: int) -> None:
        """Leave a message too large to store where it is, flagged for a
        person (and seen, so that "seen" mode does not take it for one
        stored but not yet flagged)."""
        client.add_flags([uid], [FLAGGED, SEEN], silent=True)
        log.warning(
            "IMAP %s: UID %d is larger than MAILFLOW_INBOUND_MAX_BYTES (%d bytes): "
            "not stored, left in the mailbox flagged",
            self.key,
            uid,
            max_bytes,
        )

    def _start_from(self, uidvalidity: int) -> int:
        """The UID to read above, from the checkpoint; 0 for a mailbox never
        read or whose UIDVALIDITY has changed (the checkpoint is reset)."""
        with self.runtime.readers() as session:
            checkpoint = self._checkpoint(session)
            if checkpoint is not None and checkpoint.uidvalidity == uidvalidity:
                return int(checkpoint.last_uid)
            previous = checkpoint.uidvalidity if checkpoint is not None else None
        if previous is not None:
            log.warning(
                "IMAP %s: UIDVALIDITY changed from %d to %d: reading the whole mailbox again",
                self.key,
                previous,
                uidvalidity,
            )
        with self.runtime.sessions.begin() as session:
            self._advance(session, uidvalidity, 0)
        return 0

    def _checkpoint(self, session: Session) -> ImapCheckpoint | None:
        return session.scalar(select(ImapCheckpoint).where(ImapCheckpoint.mailbox == self.key))

    def _advance(self, session: Session, uidvalidity: int, uid: int) -> None:
        now = self.runtime.clock()
        checkpoint = self._checkpoint(session)
        if checkpoint is None:
            session.add(
                ImapCheckpoint(
                    mailbox=self.key, uidvalidity=uidvalidity, last_uid=uid, updated_at=now
                )
            )
            return
        if checkpoint.uidvalidity != uidvalidity:
            checkpoint.uidvalidity = uidvalidity
            checkpoint.last_uid = uid
        elif uid > checkpoint.last_uid:
            checkpoint.last_uid = uid
        else:
            return
        checkpoint.updated_at = now

    def _commit(self, uidvalidity: int, uid: int, raw: bytes | None) -> bool:
        """In one transaction: store the message (unless this UID of this
        UIDVALIDITY already is) and advance the checkpoint past it.  Returns
        whether it was stored now."""
        origin = ImapOrigin(mailbox=self.key, uidvalidity=uidvalidity, uid=uid)
        stored_now = False
        with self.runtime.sessions.begin() as session:
            if raw is not None and not imap_message_stored(session, origin):
                message = store_inbound_message(
                    session,
                    raw,
                    source="imap",
                    envelope_from=None,
                    envelope_to=envelope_recipients(raw),
                    now=self.runtime.clock(),
                    imap=origin,
                )
                stored_now = True
                log.debug("IMAP %s: UID %d stored as inbound message %d", self.key, uid, message.id)
            self._advance(session, uidvalidity, uid)
        return stored_now

    def _stored_uids(self, uidvalidity: int, uids: Sequence[int]) -> set[int]:
        with self.runtime.readers() as session:
            return {
                int(uid)
                for uid in session.scalars(
                    select(InboundMessage.imap_uid).where(
                        InboundMessage.imap_mailbox == self.key,
                        InboundMessage.imap_uidvalidity == uidvalidity,
                        InboundMessage.imap_uid.in_(list(uids)),
                    )
                )
                if uid is not None
            }

    # ---------------------------------------------------------------- IMAP

    def _connection(self) -> Any:
        if self._client is None:
            target = self.target
            client = IMAPClient(
                target.host,
                port=target.port,
                ssl=target.use_tls,
                timeout=SOCKET_TIMEOUT_SECONDS,
            )
            try:
                client.login(target.username, target.password)
            except BaseException:
                _shutdown(client)
                raise
            self._client = client
            self._folder_ready = False
            log.info("IMAP %s: logged in", self.key)
        return self._client

    def _disconnect(self, *, polite: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if polite:
            try:
                client.logout()
                return
            except Exception:  # already broken: close it below
                log.debug("IMAP %s: logout failed", self.key, exc_info=True)
        _shutdown(client)

    def _search(self, client: Any, criteria: list[str]) -> list[int]:
        return sorted(int(uid) for uid in client.search(criteria))

    def _unfinished(self, client: Any, last_uid: int) -> list[int]:
        below = f"1:{last_uid}"
        if self.after.action == "seen":
            return self._search(client, ["UID", below, "UNSEEN"])
        if self.after.action == "move":
            # Copied and marked deleted already, when the server has no
            # MOVE: copying again would leave two copies.
            return self._search(client, ["UID", below, "NOT", "DELETED"])
        return self._search(client, ["UID", below])

    def _sizes(self, client: Any, uids: Sequence[int]) -> dict[int, int]:
        if not uids:
            return {}
        fetched = client.fetch(list(uids), ["RFC822.SIZE"])
        return {
            int(uid): int(data.get(b"RFC822.SIZE") or 0)
            for uid, data in fetched.items()
            if isinstance(data, dict)
        }

    def _bodies(self, client: Any, uids: Sequence[int]) -> dict[int, bytes]:
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

    def _apply_after(self, client: Any, uid: int) -> None:
        if self.after.action == "seen":
            client.add_flags([uid], [SEEN], silent=True)
        elif self.after.action == "delete":
            client.add_flags([uid], [DELETED], silent=True)
            self._expunge(client, uid)
        else:
            folder = self.after.folder
            self._ensure_folder(client)
            if client.has_capability("MOVE"):
                client.move([uid], folder)
            else:
                client.copy([uid], folder)
                client.add_flags([uid], [DELETED], silent=True)
                self._expunge(client, uid)

    def _expunge(self, client: Any, uid: int) -> None:
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])
        else:
            client.expunge()

    def _ensure_folder(self, client: Any) -> None:
        if self._folder_ready:
            return
        folder = self.after.folder
        if not client.folder_exists(folder):
            try:
                client.create_folder(folder)
                log.info("IMAP %s: created folder %s", self.key, folder)
            except IMAPClientError:
                # Another client may have created it meanwhile.
                if not client.folder_exists(folder):
                    raise
        self._folder_ready = True

    # ------------------------------------------------------------- waiting

    def _wait_for_mail(self, stop: threading.Event) -> None:
        """Until new mail is announced (IDLE, when the server offers it) or
        the poll interval has passed, looking at ``stop`` every second."""
        seconds = self.runtime.settings.imap_poll_seconds
        client = self._client
        if client is None or not client.has_capability("IDLE"):
            stop.wait(seconds)
            return
        deadline = time.monotonic() + min(seconds, IDLE_MAX_SECONDS)
        client.idle()
        try:
            while not stop.is_set():
                timeout = min(STOP_CHECK_SECONDS, deadline - time.monotonic())
                if timeout <= 0:
                    break
                started = time.monotonic()
                responses = client.idle_check(timeout=timeout)
                if any(_announces_mail(response) for response in responses):
                    break
                if not responses and time.monotonic() - started < timeout / 2:
                    # Readable with nothing to read: the server has most
                    # likely closed the connection; IDLE DONE will tell.
                    break
        finally:
            client.idle_done()

    def describe_failure(self, exc: BaseException) -> str:
        """One line saying what went wrong, never showing the password."""
        text = self.redacted(_plain(str(exc)))
        if isinstance(exc, LoginError):
            return (
                f"IMAP login to {self.target.server} as {self.target.username} was refused "
                f"({text}); check MAILFLOW_IMAP_URL"
            )
        if isinstance(exc, IMAPClientError):
            # The server's own words (imaplib's class names say nothing).
            return f"IMAP {self.key}: {text}"
        return f"IMAP {self.key}: {type(exc).__name__}: {text}"

    def redacted(self, text: str) -> str:
        password = self.target.password
        return text.replace(password, "***") if password else text

    def _log_failure(self, exc: Exception, delay: float) -> None:
        message = self.describe_failure(exc)
        if isinstance(exc, (IMAPClientError, OSError)):
            log.warning("%s; reconnecting in %.0f s", message, delay)
        else:
            # Not the server's doing (the database, or a bug): the traceback.
            log.error("%s; retrying in %.0f s", message, delay, exc_info=True)


def _announces_mail(response: Any) -> bool:
    """An IDLE response saying the mailbox has grown (``* n EXISTS``) or
    that the server is leaving (``* BYE``)."""
    if not isinstance(response, tuple) or len(response) < 2:
        return False
    return bool(response[1] == b"EXISTS" or response[0] == b"BYE")


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


def _shutdown(client: Any) -> None:
    try:
        client.shutdown()
    except Exception:  # the socket is gone either way
        log.debug("IMAP connection shutdown failed", exc_info=True)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _groups(uids: Sequence[int], sizes: dict[int, int], limit: int) -> Iterator[list[int]]:
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

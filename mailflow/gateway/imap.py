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

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import IMAPClientError  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import ConfigError
from mailflow.core import events
from mailflow.core.models import ImapCheckpoint, InboundMessage
from mailflow.core.runtime import Runtime
from mailflow.gateway.imap_mailbox import (
    FLAGGED,
    SEEN,
    AfterStore,
    ImapPassError,
    PassResult,
    announces_mail,
    apply_after,
    chunks,
    create_folder,
    describe_failure,
    envelope_recipients,
    groups_within,
    message_bodies,
    message_sizes,
    redacted,
    search_uids,
    shut_down,
    unfinished_uids,
)
from mailflow.gateway.inbound_messages import ImapOrigin, imap_message_stored, store_inbound_message

# What callers (the command line, tests) read from the poller's module,
# though some of it is written in imap_mailbox.py.
__all__ = ["AfterStore", "ImapPoller", "PassResult", "envelope_recipients"]

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

# ------------------------------------------------------------ the poller


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
        unfinished = unfinished_uids(client, self.after, last_uid) if last_uid else []
        # UID SEARCH UID n:* always matches the highest UID, even below n.
        new = [uid for uid in search_uids(client, ["UID", f"{last_uid + 1}:*"]) if uid > last_uid]
        candidates = sorted(set(unfinished) | set(new))

        result = PassResult()
        max_bytes = self.runtime.settings.inbound_max_bytes
        for batch in chunks(candidates, BATCH_UIDS):
            stored = self._stored_uids(uidvalidity, batch)
            to_fetch = [uid for uid in batch if uid not in stored]
            sizes = message_sizes(client, to_fetch)
            too_large = {uid for uid in to_fetch if sizes.get(uid, 0) > max_bytes}
            for uid in too_large:
                sizes[uid] = 0  # never fetched: takes no room in a group
            for group in groups_within(batch, sizes, FETCH_BYTES):
                wanted = [uid for uid in group if uid not in stored and uid not in too_large]
                bodies = message_bodies(client, wanted)
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
        stored_id = None
        with self.runtime.sessions.begin() as session:
            if raw is not None and not imap_message_stored(session, origin):
                recipients = envelope_recipients(raw)
                stored_id = store_inbound_message(
                    session,
                    raw,
                    source="imap",
                    envelope_from=None,
                    envelope_to=recipients,
                    now=self.runtime.clock(),
                    imap=origin,
                ).id
            self._advance(session, uidvalidity, uid)
        if stored_id is not None and raw is not None:
            events.reply_stored(stored_id, size=len(raw), via="imap", recipients=len(recipients))
        return stored_id is not None

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
                shut_down(client)
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
        shut_down(client)

    def _apply_after(self, client: Any, uid: int) -> None:
        folder = self.after.folder
        if folder is not None and not self._folder_ready:
            if create_folder(client, folder):
                log.info("IMAP %s: created folder %s", self.key, folder)
            self._folder_ready = True
        apply_after(client, uid, self.after)

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
                if any(announces_mail(response) for response in responses):
                    break
                if not responses and time.monotonic() - started < timeout / 2:
                    # Readable with nothing to read: the server has most
                    # likely closed the connection; IDLE DONE will tell.
                    break
        finally:
            client.idle_done()

    def describe_failure(self, exc: BaseException) -> str:
        """One line saying what went wrong, never showing the password."""
        return describe_failure(exc, self.target)

    def redacted(self, text: str) -> str:
        return redacted(text, self.target)

    def _log_failure(self, exc: Exception, delay: float) -> None:
        message = self.describe_failure(exc)
        if isinstance(exc, (IMAPClientError, OSError)):
            log.warning("%s; reconnecting in %.0f s", message, delay)
        else:
            # Not the server's doing (the database, or a bug): the traceback.
            log.error("%s; retrying in %.0f s", message, delay, exc_info=True)

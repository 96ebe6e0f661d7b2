"""Work done only once a session's transaction has committed: a count
added to a metric, a line written to the log.  Both say that something
happened, so neither may be done for a change that then rolls back (a
failed commit, a batch that falls back to one message at a time, a
savepoint rolled back)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

# What a session will do once its outermost transaction commits, each
# with the transaction (or savepoint) it was asked for in.
_PENDING = "mailflow_after_commit"

Action = Callable[[], None]


def after_commit(session: Session, action: Action) -> None:
    """Run ``action`` when the session's outermost transaction commits;
    never if that transaction, or the savepoint it was asked for in,
    rolls back."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((transaction, action))


@event.listens_for(Session, "after_commit")
def _run_committed(session: Session) -> None:
    # Also fired when a savepoint is released: only the outermost commit runs them.
    if session.get_nested_transaction() is not None:
        return
    for _transaction, action in session.info.pop(_PENDING, ()):
        action()


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous: SessionTransaction) -> None:
    # Fired for a savepoint's rollback too: what was asked for within it is
    # forgotten, what the transaction around it asked for is kept.
    if previous.parent is None:
        # The outermost transaction: nothing asked for in this session can
        # commit any more, including what was asked before it began (stored
        # with no transaction, which no savepoint's rollback would match).
        session.info.pop(_PENDING, None)
        return
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [p for p in pending if not _within(p[0], previous)]


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False

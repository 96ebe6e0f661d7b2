"""One scheduler pass as the tasks see it: the time it runs as, and the
transactions it writes in.  In a dry run every transaction is rolled back
at its end, so a task reports what it would do and changes nothing (the
jobs it would add go with it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.core.runtime import Runtime


@dataclass(frozen=True)
class SchedulerPass:
    runtime: Runtime
    now: datetime
    dry_run: bool = False

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for looking only (never holds the write lock)."""
        with self.runtime.readers() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, unless this is
        a dry run, or the block raises."""
        with self.runtime.sessions() as session:
            session.begin()
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            if self.dry_run:
                session.rollback()
            else:
                session.commit()


# A task returns one line for each thing it did (or, in a dry run, would
# do); it must not raise for one bad row and leave the others.
Task = Callable[[SchedulerPass], list[str]]

"""`mailflow ARGS` in a process that stalls in its first scheduler write
transaction, for a test to SIGKILL it there: ``before-commit`` stalls
with the statements run but not committed, ``after-commit`` just after
the commit (before the next transaction begins).  It prints STALLED
when it gets there.

    python -m tests.support.stalling_scheduler after-commit scheduler --once --at TIME
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from mailflow.cli.main import main
from mailflow.core.scheduling import SchedulerPass

STALLED = "STALLED"
MODES = ("before-commit", "after-commit")


def stall() -> None:
    print(STALLED, flush=True)
    time.sleep(3600)


def stalling_writing(mode: str) -> object:
    real = SchedulerPass.writing

    @contextmanager
    def writing(self: SchedulerPass) -> Iterator[Session]:
        with real(self) as session:
            yield session
            if mode == "before-commit":
                session.flush()
                stall()
        stall()

    return writing


if __name__ == "__main__":
    mode = sys.argv[1]
    assert mode in MODES, mode
    SchedulerPass.writing = stalling_writing(mode)  # type: ignore[method-assign]
    sys.argv = ["mailflow", *sys.argv[2:]]
    main()

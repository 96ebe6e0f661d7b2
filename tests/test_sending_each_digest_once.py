"""Each auditor gets one digest per period whatever the schedulers and
workers do: the pass run twice, two passes at once (threads, or two
`mailflow scheduler --once` processes), a scheduler that ended after
committing its rows with the job left for a worker started afresh, and
two workers composing the same batch at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import Digest, DigestSchedule, DigestState, Job, User
from mailflow.core.models.digests import SEND_DIGESTS
from mailflow.core.runtime import Runtime
from mailflow.core.scheduling import SchedulerPass
from mailflow.people.users import set_digest
from mailflow.reports.digest_job import send_digests
from mailflow.reports.digest_scheduling import queue_digests
from mailflow.workers.periodic import run_pass
from tests.support.digests import FRIDAY_8, OLA, UMA, Digests

AT = FRIDAY_8 + timedelta(minutes=1)
LINE = "digests: daily digest for Fri 4 Dec 08:00: 2 auditor(s)"


def rows_per_auditor(session: Session) -> Counter[str]:
    session.rollback()
    rows = session.scalars(
        select(User.email)
        .join(Digest, Digest.user_id == User.id)
        .where(Digest.period_at == FRIDAY_8)
    )
    return Counter(rows)


def digest_jobs(session: Session) -> int:
    session.rollback()
    return int(session.scalar(select(func.count()).where(Job.kind == SEND_DIGESTS)) or 0)


def assert_sent_once(digests: Digests) -> None:
    got = digests.new_digests()
    assert Counter(who for who, _ in got) == Counter({OLA: 1, UMA: 1})
    assert {str(message["Subject"]) for _, message in got} == {"Digest 1, 4 December 2026"}


def test_the_pass_run_twice_queues_each_digest_once(digests: Digests) -> None:
    digests.build()

    assert digests.digest_pass(AT) == [LINE]
    assert digests.digest_pass(AT + timedelta(minutes=1)) == []

    assert rows_per_auditor(digests.session) == Counter({OLA: 1, UMA: 1})
    assert digest_jobs(digests.session) == 1
    digests.work()
    assert_sent_once(digests)


def test_two_passes_at_once_queue_each_digest_and_job_once(digests: Digests) -> None:
    digests.build()
    digests.clock.now = AT
    together = threading.Barrier(2, timeout=30)

    def digests_together(run: SchedulerPass) -> list[str]:
        together.wait()
        return queue_digests(run)

    done: list[list[str]] = []
    passes = [
        threading.Thread(
            target=lambda: done.append(
                run_pass(digests.runtime, AT, (("digests", digests_together),))
            )
        )
        for _ in range(2)
    ]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(timeout=60)

    assert sorted(line for lines in done for line in lines) == [LINE]
    assert rows_per_auditor(digests.session) == Counter({OLA: 1, UMA: 1})
    assert digest_jobs(digests.session) == 1
    digests.work()
    assert_sent_once(digests)


def scheduler_once(settings: Settings, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env |= {
        "MAILFLOW_DATABASE_URL": settings.database_url,
        "MAILFLOW_SECRET_KEY": settings.secret_key,
        "MAILFLOW_MAIL_DOMAIN": settings.mail_domain,
        "MAILFLOW_BASE_URL": settings.base_url,
    }
    with (tmp_path / f"{name}.out").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mailflow", "scheduler", "--once", "--at", AT.isoformat()],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )


def test_two_schedulers_then_a_fresh_worker_send_each_digest_once(
    digests: Digests, settings: Settings, tmp_path: Path
) -> None:
    """Two `mailflow scheduler --once` processes at once; both end (as a
    scheduler stopped after committing) before any worker has run, and a
    worker started afresh sends what they queued."""
    digests.build()
    processes = [scheduler_once(settings, tmp_path, f"once-{n}") for n in (1, 2)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    said = [(tmp_path / f"once-{n}.out").read_text() for n in (1, 2)]

    assert sum(output.count(LINE.removeprefix("digests: ")) for output in said) == 1
    assert rows_per_auditor(digests.session) == Counter({OLA: 1, UMA: 1})
    assert digest_jobs(digests.session) == 1

    fresh = Runtime(settings, clock=lambda: AT)
    try:
        Digests(fresh, digests.clock, digests.session, digests.relay, seen=digests.seen).work()
    finally:
        fresh.close()
    assert_sent_once(digests)


def test_two_workers_composing_the_same_batch_send_each_digest_once(digests: Digests) -> None:
    digests.build()
    digests.digest_pass(AT)
    digests.session.rollback()
    (payload,) = digests.session.scalars(select(Job.payload).where(Job.kind == SEND_DIGESTS))
    together = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def compose() -> None:
        together.wait()
        try:
            send_digests(digests.runtime, dict(payload))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=compose) for _ in range(2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    # And once more after both: nothing is left to compose.
    send_digests(digests.runtime, dict(payload))

    assert errors == []
    digests.work()  # the outbox sends what was queued
    assert_sent_once(digests)


def test_an_auditor_who_changes_schedule_after_the_pass_is_sent_none_for_that_period(
    digests: Digests,
) -> None:
    digests.build()
    digests.digest_pass(FRIDAY_8)
    with digests.runtime.sessions.begin() as session:
        set_digest(session, email=UMA, schedule=DigestSchedule.WEEKLY, now=FRIDAY_8, actor="test")

    digests.work()

    assert [to for to, _ in digests.new_digests()] == [OLA]
    with digests.runtime.sessions() as session:
        states = dict(session.execute(select(User.email, Digest.state).join(Digest)).all())
    assert states[UMA] is DigestState.SKIPPED

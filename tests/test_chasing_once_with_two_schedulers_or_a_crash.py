"""Each chaser goes out once whatever the schedulers do: two passes at
once (threads, or two `mailflow scheduler --once` processes), a second
scheduler waiting while one leads (PostgreSQL's advisory lock), one
killed after it committed its chaser rows or in the middle of writing
them; and `--dry-run` only says what it would do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.config import Settings
from mailflow.core.models import Chaser, ChaserEmail, DigestSchedule, Job, User
from mailflow.core.runtime import Runtime
from mailflow.core.scheduling import SchedulerPass
from mailflow.deadlines.chasing import SEND_CHASERS, chase
from mailflow.workers.periodic import run_pass
from mailflow.workers.queue import QueueWorker
from mailflow.workers.scheduler import LEADER_LOCK_KEY
from tests.support.relay import CapturingRelay
from tests.support.seed import alert_spec_data, seed_people
from tests.support.stalling_scheduler import STALLED
from tests.support.waiting import wait_until

ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
# 23 hours before the deadline: the 24-hour reminders of both alerts are due.
REMINDERS_DUE = ISSUED + timedelta(hours=25)
AT = REMINDERS_DUE.isoformat()
REFERENCES = ("CC-4720", "CC-4721")
RECIPIENTS = {
    "ann@riverside.example",
    "raj@riverside.example",
    "bea@brookfield.example",
    "li@itservices.example",
    "sam@castleton.example",
}
# Every reminder email the two alerts call for, once each.
EVERY_REMINDER = Counter({(ref, who): 1 for ref in REFERENCES for who in RECIPIENTS})
REMINDER_LINE = "chasing: {}: 24-hour reminder for 3 organisation(s), 5 email(s)"


@pytest.fixture
def alerts(session: Session) -> None:
    seed_people(session)
    for reference in REFERENCES:
        spec = parse_alert_spec(alert_spec_data(reference=reference), source="test")
        issue_alert(session, spec, now=ISSUED, actor="test", mail_domain="alerts.test")
    # Each pass says only what it chased: the auditor wants no digests
    # (tests/test_sending_each_digest_once.py sends those once).
    session.execute(update(User).values(digest=DigestSchedule.OFF))
    session.commit()


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


# ------------------------------------------------------------------ looking


def reminder_emails(session: Session) -> Counter[tuple[str, str]]:
    """(alert reference, person) of every chasing email, with how many."""
    from mailflow.core.models import Alert

    session.rollback()  # a fresh snapshot
    rows = session.execute(
        select(Alert.reference, User.email)
        .join(ChaserEmail, ChaserEmail.alert_id == Alert.id)
        .join(User, User.id == ChaserEmail.user_id)
    )
    return Counter((reference, email) for reference, email in rows)


def chaser_keys(session: Session) -> Counter[tuple[int, int | None, str, str]]:
    session.rollback()
    rows = session.execute(
        select(Chaser.alert_id, Chaser.organisation_id, Chaser.kind, Chaser.step)
    )
    return Counter((a, o, k.value, s) for a, o, k, s in rows)


def jobs_by_batch(session: Session) -> Counter[str]:
    session.rollback()
    payloads = session.scalars(select(Job.payload).where(Job.kind == SEND_CHASERS))
    return Counter(str(p["batch"]) for p in payloads)


def batches_with_emails(session: Session) -> set[str]:
    session.rollback()
    return set(session.scalars(select(ChaserEmail.batch).distinct()))


def assert_everything_once(session: Session) -> None:
    assert reminder_emails(session) == EVERY_REMINDER
    keys = chaser_keys(session)
    # Three organisations and the alert-wide mark, per alert.
    assert len(keys) == 8 and set(keys.values()) == {1}
    jobs = jobs_by_batch(session)
    assert set(jobs) == batches_with_emails(session)
    assert set(jobs.values()) == {1}


# ---------------------------------------------------------------- processes


def scheduler_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    return {
        **env,
        "MAILFLOW_DATABASE_URL": settings.database_url,
        "MAILFLOW_SECRET_KEY": settings.secret_key,
        "MAILFLOW_MAIL_DOMAIN": settings.mail_domain,
        "MAILFLOW_BASE_URL": settings.base_url,
        **extra,
    }


def start(
    settings: Settings, tmp_path: Path, name: str, *args: str, module: str = "mailflow"
) -> tuple[subprocess.Popen[bytes], Path]:
    """The process, and the file its stdout goes to (its stderr goes to
    the same name with .err)."""
    out = tmp_path / f"{name}.out"
    with out.open("wb") as stdout, errors(out).open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=scheduler_env(settings),
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,
        )
    return process, out


def errors(out: Path) -> Path:
    return out.with_suffix(".err")


def exit_code(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Its exit code; killed if it has not ended by then."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def stalled_scheduler(settings: Settings, tmp_path: Path, mode: str) -> None:
    """A `mailflow scheduler --once` that stalls in its first write
    transaction, SIGKILLed there."""
    module = "tests.support.stalling_scheduler"
    args = (mode, "scheduler", "--once", "--at", AT)
    process, out = start(settings, tmp_path, mode, *args, module=module)
    try:
        wait_until(lambda: STALLED in out.read_text(), timeout=60, what="the scheduler to stall")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def scheduler_once(settings: Settings, tmp_path: Path, *args: str) -> str:
    process, out = start(settings, tmp_path, "once", "scheduler", "--once", *args)
    assert exit_code(process, 120) == 0, errors(out).read_text()
    return out.read_text()


# -------------------------------------------------------------------- tests


def test_two_passes_at_once_write_each_chaser_email_and_job_once(
    alerts: None, runtime: Runtime, session: Session
) -> None:
    # Both passes start chasing together, so their transactions meet.
    together = threading.Barrier(2, timeout=30)

    def chasing_together(run: SchedulerPass) -> list[str]:
        together.wait()
        return chase(run)

    done: list[list[str]] = []
    passes = [
        threading.Thread(
            target=lambda: done.append(
                run_pass(runtime, REMINDERS_DUE, (("chasing", chasing_together),))
            )
        )
        for _ in range(2)
    ]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(timeout=60)

    # Between them, the two passes took each step once.
    assert sorted(line for lines in done for line in lines) == [
        REMINDER_LINE.format(ref) for ref in REFERENCES
    ]
    assert_everything_once(session)


def test_two_scheduler_processes_at_once_chase_once(
    alerts: None, settings: Settings, session: Session, tmp_path: Path
) -> None:
    started = [
        start(settings, tmp_path, f"once-{n}", "scheduler", "--once", "--at", AT) for n in (1, 2)
    ]
    outputs = []
    for process, out in started:
        assert exit_code(process, 120) == 0, errors(out).read_text()
        outputs.append(out.read_text())

    said = Counter(line for output in outputs for line in output.splitlines())
    assert said == Counter({REMINDER_LINE.format(ref): 1 for ref in REFERENCES}) + Counter(
        {"nothing was due": said["nothing was due"]}
    )
    assert_everything_once(session)


@pytest.mark.backends("postgresql")  # only PostgreSQL schedulers take turns to lead
def test_a_second_scheduler_waits_while_one_leads(
    alerts: None, settings: Settings, session: Session, tmp_path: Path
) -> None:
    leader, leader_out = start(settings, tmp_path, "leader", "scheduler")
    processes = [leader]
    try:
        wait_until(lambda: lead_is_taken(session), timeout=60, what="the first to lead")
        once = ("scheduler", "--once", "--at", AT)
        waiting, waiting_out = start(settings, tmp_path, "waiting", *once)
        processes.append(waiting)
        # Two of its polls for the lead go by, and it has done nothing.
        time.sleep(5)
        assert waiting.poll() is None, errors(waiting_out).read_text()
        assert reminder_emails(session) == Counter()
        leader.send_signal(signal.SIGTERM)
        assert leader.wait(timeout=30) == 0, errors(leader_out).read_text()
        assert waiting.wait(timeout=30) == 0, errors(waiting_out).read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert REMINDER_LINE.format("CC-4720") in waiting_out.read_text()
    assert_everything_once(session)


@pytest.mark.backends("postgresql")  # only PostgreSQL schedulers take turns to lead
def test_a_scheduler_gives_up_waiting_to_lead_with_a_clear_error(
    alerts: None, settings: Settings, session: Session, tmp_path: Path
) -> None:
    with session.get_bind().connect() as holder:  # type: ignore[union-attr]
        assert holder.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY})
        process, out = start(settings, tmp_path, "late", "scheduler", "--once", "--wait", "1")
        assert exit_code(process, 60) == 2
        holder.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_KEY})
    assert errors(out).read_text().splitlines()[-1] == (
        "mailflow: another scheduler leads and did not let go within 1 seconds"
    )
    assert reminder_emails(session) == Counter()


def lead_is_taken(session: Session) -> bool:
    """Whether some scheduler holds the lead (asking for it gives it back
    at once when it was free)."""
    with session.get_bind().connect() as conn:  # type: ignore[union-attr]
        free = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY})
        if free:
            conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_KEY})
        conn.commit()
    return not free


def test_killed_after_committing_its_chasers_a_restart_loses_and_repeats_nothing(
    alerts: None,
    settings: Settings,
    session: Session,
    tmp_path: Path,
    relay: CapturingRelay,
) -> None:
    stalled_scheduler(settings, tmp_path, "after-commit")
    # Its first transaction holds every alert's reminders (one statement
    # chases all the alerts due a step), their emails and one job to
    # compose them; the process died before any worker ran it.
    assert set(reminder_emails(session)) == set(EVERY_REMINDER)
    assert len(jobs_by_batch(session)) == 1

    again = scheduler_once(settings, tmp_path, "--at", AT)

    assert "reminder" not in again
    assert_everything_once(session)
    # And the worker sends every reminder, the killed pass's too, once.
    # The jobs are due at the time the passes ran as.
    runtime = Runtime(settings, clock=lambda: REMINDERS_DUE)
    # One thread: the two alerts' own deliveries run one after the other.
    worker = QueueWorker(runtime, threads=1, poll_seconds=0.05)
    worker.start()
    try:
        wait_until(
            lambda: len(reminders_sent(relay)) >= len(EVERY_REMINDER), timeout=30, what="reminders"
        )
        time.sleep(0.5)
    finally:
        worker.stop()
        runtime.close()
    assert Counter(reminders_sent(relay)) == EVERY_REMINDER


def reminders_sent(relay: CapturingRelay) -> list[tuple[str, str]]:
    """(alert, recipient) of each reminder email the relay took."""
    sent = []
    for received in relay.received:
        message = received.message
        if str(message["Subject"]).startswith("Reminder:"):
            sent.append((str(message["X-Mailflow-Alert"]), received.recipients[0]))
    return sent


def test_killed_inside_its_transaction_it_leaves_nothing_half_written(
    alerts: None, settings: Settings, session: Session, tmp_path: Path
) -> None:
    stalled_scheduler(settings, tmp_path, "before-commit")

    assert reminder_emails(session) == Counter()
    assert chaser_keys(session) == Counter()
    assert jobs_by_batch(session) == Counter()
    again = scheduler_once(settings, tmp_path, "--at", AT)
    assert again.splitlines() == [REMINDER_LINE.format(ref) for ref in REFERENCES]
    assert_everything_once(session)


def test_a_dry_run_prints_what_it_would_do_and_writes_nothing(
    alerts: None, settings: Settings, session: Session, tmp_path: Path
) -> None:
    jobs_before = session.scalars(select(Job.id)).all()

    said = scheduler_once(settings, tmp_path, "--at", AT, "--dry-run")

    assert said.splitlines() == [f"would: {REMINDER_LINE.format(ref)}" for ref in REFERENCES]
    assert reminder_emails(session) == Counter()
    assert chaser_keys(session) == Counter()
    assert session.scalars(select(Job.id)).all() == jobs_before


def test_dry_run_or_at_without_once_is_refused(settings: Settings, tmp_path: Path) -> None:
    for args in (("--dry-run",), ("--at", AT)):
        process, out = start(settings, tmp_path, "refused", "scheduler", *args)
        assert exit_code(process, 60) == 2
        assert errors(out).read_text() == "mailflow: --at and --dry-run go with --once\n"


def test_a_bad_setting_stops_the_scheduler_naming_it(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "bad.out"
    env: dict[str, Any] = scheduler_env(settings, MAILFLOW_WORKING_HOURS="18:00-08:00")
    with out.open("wb") as sink:
        process = subprocess.run(
            [sys.executable, "-m", "mailflow", "scheduler", "--once"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
    assert process.returncode == 2
    assert "MAILFLOW_WORKING_HOURS" in out.read_text()

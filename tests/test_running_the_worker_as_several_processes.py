"""`mailflow worker --processes N` on the in-process queue: each process
dispatches its own share of the jobs from the database, holding them under
a lease; when every process is killed mid fan-out, the ones started in
their place take the dead ones' jobs and deliveries once that lease runs
out, and only what was in flight at the kill arrives twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailflow.alerts.fanout import BATCHES_IN_FLIGHT, CLAIM_PER_CONNECTION
from mailflow.core.models import Delivery, DeliveryState, Job, JobState, User
from tests.support.environment import SECRET_KEY
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_crowd
from tests.support.waiting import settled, wait_until

pytestmark = pytest.mark.slow

CONNECTIONS = 2
LEASE_SECONDS = 5


def start_workers(
    database_url: str, relay_port: int, tmp_path: Path, processes: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MAILFLOW_DATABASE_URL": database_url,
        "MAILFLOW_SECRET_KEY": SECRET_KEY,
        "MAILFLOW_SMTP_RELAY": f"smtp://127.0.0.1:{relay_port}",
        "MAILFLOW_SMTP_CONNECTIONS": str(CONNECTIONS),
        "MAILFLOW_MAIL_DOMAIN": "alerts.test",
        "MAILFLOW_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    env.pop("MAILFLOW_BROKER_URL", None)
    with (tmp_path / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mailflow", "worker", "--processes", str(processes)],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )


def children_of(process: subprocess.Popen[bytes]) -> set[int]:
    path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return {int(pid) for pid in path.read_text().split()}


def sent_emails(session: Session) -> set[str]:
    session.rollback()
    return set(
        session.scalars(
            select(User.email)
            .join(Delivery, Delivery.user_id == User.id)
            .where(Delivery.state == DeliveryState.SENT)
        )
    )


@pytest.fixture
def stop_at_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_worker_processes_killed_mid_fan_out_are_replaced_and_finish_it(
    session: Session,
    database_url: str,
    relay: CapturingRelay,
    tmp_path: Path,
    stop_at_end: list[subprocess.Popen[bytes]],
) -> None:
    crowd = seed_crowd(session, organisations=20, per_organisation=10)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.commit()
    relay.handler.delay_seconds = 0.03  # so the kill lands mid fan-out

    parent = start_workers(database_url, relay.port, tmp_path, 2)
    stop_at_end.append(parent)
    relay.wait_for(40, timeout=60)
    first = children_of(parent)
    assert len(first) == 2
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)  # the relay finishes whatever DATA it had whole
    received_before = Counter(r.recipients[0] for r in relay.received)
    recorded_before = sent_emails(session)
    assert len(received_before) < len(crowd.emails), "the kill did not land mid fan-out"
    in_flight = set(received_before) - recorded_before
    assert len(in_flight) <= 2 * BATCHES_IN_FLIGHT * CLAIM_PER_CONNECTION * CONNECTIONS

    relay.handler.delay_seconds = 0.0
    readers = sessionmaker(session.get_bind())
    wait_until(lambda: settled(readers, alert_id), timeout=90, what="the new processes to finish")
    second = children_of(parent)
    assert len(second) == 2 and not second & first

    copies = Counter(r.recipients[0] for r in relay.received)
    assert set(copies) == set(crowd.emails), "someone got no email"
    twice = {address for address, n in copies.items() if n > 1}
    assert twice <= in_flight and max(copies.values()) <= 2
    assert sent_emails(session) == set(crowd.emails)
    # The send jobs are marked done in a transaction after their last
    # delivery settles, so wait for that rather than race it.
    wait_until(lambda: all_jobs_done(readers), timeout=30, what="every job to be marked done")

    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in second)


def all_jobs_done(readers: sessionmaker[Session]) -> bool:
    with readers() as reading:
        return set(reading.scalars(select(Job.state))) == {JobState.DONE}


@pytest.mark.parametrize(("cpus", "threads"), [(None, 2), (1, 2), (2, 4), (3, 6), (16, 8)])
def test_serve_gives_its_queue_worker_two_threads_a_cpu_within_bounds(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, threads: int
) -> None:
    from mailflow.cli.serve_command import default_worker_threads

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert default_worker_threads() == threads

"""A publisher watches a big alert go out: `mailflow alert show REFERENCE
--watch` prints how many of its emails are sent every couple of seconds
and ends once none is waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from mailflow.cli import alert_watch
from mailflow.config import Settings, parse_relay
from mailflow.core.models import Delivery, DeliveryState
from mailflow.core.runtime import Runtime
from tests.support.cli import mailflow_with, one_error_line
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_crowd
from tests.support.waiting import run_worker_until_settled

AUDIENCE = 30


def watcher(settings: Settings, tmp_path: Path) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")},
        "MAILFLOW_DATABASE_URL": settings.database_url,
        "MAILFLOW_SECRET_KEY": settings.secret_key,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mailflow", "alert", "show", "cc-4720", "--watch", "--every", "0.2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watching_an_alert_prints_its_progress_and_ends_when_every_email_is_sent(
    session: Session, settings_for: Any, database_url: str, relay: CapturingRelay, tmp_path: Path
) -> None:
    settings = settings_for(
        database_url, smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"), smtp_connections=1
    )
    crowd = seed_crowd(session, organisations=AUDIENCE, per_organisation=1)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.commit()
    relay.handler.delay_seconds = 0.02
    watching = watcher(settings, tmp_path)
    try:
        assert watching.stdout is not None
        # Before anything is sent: it is watching, not finished.
        first = watching.stdout.readline()
        assert first == f"CC-4720: 0/{AUDIENCE} sent, {AUDIENCE} waiting\n"
        assert watching.poll() is None
        runtime = Runtime(settings)
        try:
            run_worker_until_settled(runtime, alert_id)
        finally:
            runtime.close()
        rest, errors = watching.communicate(timeout=60)
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait()

    assert watching.returncode == 0, errors
    lines = [first.strip(), *rest.splitlines()]
    assert lines[-1] == f"CC-4720: {AUDIENCE}/{AUDIENCE} sent, done"
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts)
    assert len(relay.received) == AUDIENCE


def test_watching_an_unknown_alert_says_so_and_stops(settings: Settings) -> None:
    result = mailflow_with(settings, "alert", "show", "CC-9999", "--watch")

    assert result.exit_code == 1
    assert one_error_line(result).startswith("no alert CC-9999")


def test_watching_as_json_is_refused_saying_why(settings: Settings) -> None:
    result = mailflow_with(settings, "alert", "show", "CC-4720", "--watch", "--json")

    assert result.exit_code == 2
    assert "--watch prints a line at a time: leave out --json" in result.stderr


def test_a_watch_that_sees_nothing_move_for_a_minute_asks_whether_a_worker_runs(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    crowd = seed_crowd(session, organisations=3, per_organisation=1)
    issue(session, audience={"organisations": crowd.org_codes})
    session.commit()  # and no worker runs, for two minutes on the watch's clock
    now = [1000.0]

    def wait(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 1000 + 2 * alert_watch.STALL_SECONDS:
            # Then someone starts a worker, and everything goes.
            session.execute(update(Delivery).values(state=DeliveryState.SENT))
            session.commit()

    monkeypatch.setattr(alert_watch, "CLOCK", lambda: now[0])
    monkeypatch.setattr(alert_watch, "WAIT", wait)

    watched = mailflow_with(settings, "alert", "show", "cc-4720", "--watch", "--every", "10")

    assert watched.exit_code == 0, watched.output
    assert watched.stdout.splitlines() == [
        "CC-4720: 0/3 sent, 3 waiting",
        "CC-4720: 3/3 sent, done",
    ]
    # Said once, on standard error, after a minute without a change.
    assert watched.stderr.splitlines() == [
        "CC-4720: nothing sent or failed for 60 s: is a worker running (`mailflow worker`)? "
        "`mailflow alert show CC-4720` shows each email's state"
    ]

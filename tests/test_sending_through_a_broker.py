"""The same fan-out through real brokers: RabbitMQ and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.config import Settings, parse_relay
from mailflow.core.models import Job
from mailflow.core.runtime import Runtime
from mailflow.workers.queue import QueueWorker
from tests.support.brokers import delete_queues
from tests.support.relay import CapturingRelay
from tests.support.seed import AUDIENCE_RECIPIENTS, alert_spec_data, seed_people
from tests.support.waiting import settled, wait_until


@pytest.fixture
def broker_settings(
    settings_for: object, database_url: str, relay: CapturingRelay, broker_url: str
) -> Iterator[Settings]:
    settings: Settings = settings_for(  # type: ignore[operator]
        database_url,
        broker_url=broker_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
    )
    yield settings
    assert settings.broker_url is not None
    delete_queues(settings.broker_url, settings.queue_name)


def test_an_alert_issued_from_the_cli_goes_through_the_broker_to_a_worker(
    broker_settings: Settings, session: Session, relay: CapturingRelay, tmp_path: object
) -> None:
    seed_people(session)
    session.commit()
    import json
    from pathlib import Path

    alert_file = Path(str(tmp_path)) / "alert.json"
    alert_file.write_text(json.dumps(alert_spec_data()))
    env = {
        "MAILFLOW_DATABASE_URL": broker_settings.database_url,
        "MAILFLOW_SECRET_KEY": broker_settings.secret_key,
        "MAILFLOW_BROKER_URL": broker_settings.broker_url or "",
        "MAILFLOW_QUEUE_NAME": broker_settings.queue_name,
    }
    result = CliRunner().invoke(cli, ["alert", "issue", str(alert_file)], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "CC-4720"
    # The command put the job on the broker itself; nothing has run it yet.
    session.rollback()
    job = session.scalars(select(Job)).one()
    assert job.enqueued_at is not None
    assert relay.received == []

    runtime = Runtime(broker_settings)
    # The worker is told not to dispatch for minutes, so only the message the
    # command sent can start the fan-out.
    worker = QueueWorker(runtime, poll_seconds=600)
    worker.start()
    try:
        wait_until(
            lambda: settled(runtime.sessions, job.payload["alert_id"]),
            timeout=30,
            what="the worker to send every email",
        )
        # A duplicate message (a broker redelivery) sends nothing again.
        worker.queue.actor.send(job.id)
        wait_until(lambda: _job_state(runtime, job.id) == "done", timeout=10, what="job done")
    finally:
        worker.stop()
        runtime.close()
    assert sorted(r.recipients[0] for r in relay.received) == sorted(AUDIENCE_RECIPIENTS)


def _job_state(runtime: Runtime, job_id: int) -> str:
    with runtime.sessions() as s:
        return str(s.get_one(Job, job_id).state)

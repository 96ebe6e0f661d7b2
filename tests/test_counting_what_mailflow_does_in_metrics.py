"""An operator's Prometheus scrapes each edge's /metrics and sees what
mailflow did: the worker counts the emails the relay took (an alert's
fan-out to a few organisations, one per recipient) and the replies it
processed; the inbound server counts the replies it stored.  The edges
run as real processes, mail goes through the real relay and comes in by
real SMTP, and the text is read with prometheus_client's own parser.

The web edge times every request by its route's template, so a link's
token never becomes a label."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailflow.alerts.issuing import DELIVER_ALERT
from mailflow.answers.reply_emails import CONFIRM_KIND
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli.metrics_server import metrics_server
from mailflow.config import Settings
from mailflow.core import metrics
from mailflow.core.models import Delivery, InboundMessage, InboundState, OutgoingEmail, User
from mailflow.core.runtime import Runtime
from mailflow.core.second_factor.throttle import FREE_FAILURES
from tests.support.dovecot import DovecotAccount
from tests.support.environment import SECRET_KEY
from tests.support.machines import environment, running, start, wait_for_port
from tests.support.mail import MAIL_DOMAIN, a_reply, reply
from tests.support.pages import Web, answer_link, post_form
from tests.support.relay import CapturingRelay, free_port
from tests.support.scraping import get, scrape, value
from tests.support.seed import AUDIENCE_RECIPIENTS, issue, seed_people
from tests.support.waiting import settled, wait_until
from tests.support.web_server import web_server


@dataclass(frozen=True)
class Edges:
    worker_metrics: int
    smtpd_metrics: int
    smtpd: int


@pytest.fixture
def edges(database_url: str, relay: CapturingRelay, tmp_path: Path) -> Iterator[Edges]:
    """`mailflow worker` and `mailflow smtpd`, each with its metrics port,
    on the test's database, sending through the test's relay."""
    env = environment(
        {
            "MAILFLOW_DATABASE_URL": database_url,
            "MAILFLOW_SECRET_KEY": SECRET_KEY,
            "MAILFLOW_MAIL_DOMAIN": MAIL_DOMAIN,
            "MAILFLOW_BASE_URL": "https://mailflow.test",
            "MAILFLOW_SMTP_RELAY": f"smtp://127.0.0.1:{relay.port}",
            "MAILFLOW_QUEUE_NAME": f"mailflow-metrics-{uuid.uuid4().hex[:8]}",
        }
    )
    ports = Edges(free_port(), free_port(), free_port())
    worker = start(
        "worker", ["worker", "--metrics-listen", f"127.0.0.1:{ports.worker_metrics}"], env, tmp_path
    )
    smtpd = start(
        "smtpd",
        [
            "smtpd",
            "--listen",
            f"127.0.0.1:{ports.smtpd}",
            "--metrics-listen",
            f"127.0.0.1:{ports.smtpd_metrics}",
        ],
        env,
        tmp_path,
    )
    with running([worker, smtpd]):
        wait_for_port(worker, ports.worker_metrics)
        wait_for_port(smtpd, ports.smtpd)
        wait_for_port(smtpd, ports.smtpd_metrics)
        yield ports
        assert "Traceback" not in worker.log + smtpd.log, worker.log + smtpd.log


def test_an_alert_to_a_few_organisations_is_counted_once_per_email_the_relay_took(
    edges: Edges, session: Session, engine: sa.Engine, relay: CapturingRelay
) -> None:
    before = scrape(edges.worker_metrics)
    seed_people(session)
    alert_id = issue(session).alert.id
    session.commit()

    wait_until(lambda: settled(sessionmaker(engine), alert_id), timeout=60, what="the fan-out")
    # Observed once the fan-out job is recorded done, after every send.
    wait_until(
        lambda: (
            value(
                scrape(edges.worker_metrics),
                "mailflow_job_latency_seconds_count",
                kind=DELIVER_ALERT,
            )
            == 1
        ),
        timeout=30,
        what="the fan-out job to finish",
    )

    after = scrape(edges.worker_metrics)
    sent = value(after, "mailflow_emails_sent_total", kind="alert") - value(
        before, "mailflow_emails_sent_total", kind="alert"
    )
    assert len(relay.received) == len(AUDIENCE_RECIPIENTS)
    assert sent == len(relay.received)
    assert value(after, "mailflow_emails_failed_total", kind="alert") == 0
    assert value(after, "mailflow_jobs_pending", kind=DELIVER_ALERT) == 0


def test_a_reply_over_smtp_is_counted_as_received_by_the_inbound_server_and_processed_by_the_worker(
    edges: Edges, session: Session, engine: sa.Engine, relay: CapturingRelay
) -> None:
    seed_people(session)
    alert_id = issue(session).alert.id
    session.commit()
    wait_until(lambda: settled(sessionmaker(engine), alert_id), timeout=60, what="the fan-out")
    reply_key = session.scalar(
        select(Delivery.reply_key)
        .join(User, User.id == Delivery.user_id)
        .where(User.email == "raj@riverside.example")
    )
    received_before = scrape(edges.smtpd_metrics)
    processed_before = scrape(edges.worker_metrics)

    with smtplib.SMTP("127.0.0.1", edges.smtpd, timeout=30) as client:
        refused = client.sendmail(
            "raj@riverside.example",
            [f"reply+{reply_key}@{MAIL_DOMAIN}"],
            a_reply(
                "raj@riverside.example",
                f"reply+{reply_key}@{MAIL_DOMAIN}",
                "RXA: complete",
            ),
        )
    assert refused == {}
    readers = sessionmaker(engine)
    wait_until(lambda: _confirm_email_sent(readers), timeout=60, what="the confirm email")
    # Counted as each transaction commits, a moment after the database shows it.
    wait_until(
        lambda: (
            _rise(
                processed_before,
                scrape(edges.worker_metrics),
                "mailflow_emails_sent_total",
                kind=CONFIRM_KIND,
            )
            >= 1
        ),
        timeout=10,
        what="the confirm email to be counted",
    )

    received = scrape(edges.smtpd_metrics)
    processed = scrape(edges.worker_metrics)
    assert _rise(received_before, received, "mailflow_replies_received_total", source="smtp") == 1
    assert (
        _rise(processed_before, processed, "mailflow_replies_processed_total", state="processed")
        == 1
    )
    assert _rise(processed_before, processed, "mailflow_replies_failed_total") == 0
    assert _rise(processed_before, processed, "mailflow_emails_sent_total", kind=CONFIRM_KIND) == 1
    assert value(processed, "mailflow_replies_waiting") == 0


def test_request_times_are_labelled_with_the_route_template_never_the_token_in_the_link(
    settings: Settings, session: Session
) -> None:
    seed_people(session)
    issue(session)
    session.commit()
    link = answer_link(session, settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE)
    token = link.removeprefix("/r/")
    runtime = Runtime(settings)
    web_port = free_port()
    health = metrics_server(runtime, ("127.0.0.1", free_port()), broker=False, queue=False)
    assert health is not None
    health.start()
    try:
        with web_server(runtime, web_port):
            status, page = get(web_port, link)
            assert status == 200, page
            assert get(web_port, "/no/such/page/" + token)[0] == 404
            status, text = get(health.port, "/metrics")
    finally:
        health.stop()
        runtime.close()

    assert status == 200
    samples = scrape_text(text)
    routes = {
        dict(labels)["route"]
        for name, labels in samples
        if name == "mailflow_http_request_duration_seconds_count"
    }
    assert {"/r/{token}", "unmatched"} <= routes
    assert token not in text
    assert all(token not in label for _, labels in samples for _, label in labels)


# ---------------------------------------------------------------- helpers


def scrape_text(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _rise(before: dict, after: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return value(after, name, **labels) - value(before, name, **labels)


def _confirm_email_sent(readers: sessionmaker[Session]) -> bool:
    with readers() as session:
        states = set(session.scalars(select(InboundMessage.state)))
        confirms = session.scalars(
            select(OutgoingEmail.sent_at).where(OutgoingEmail.kind == CONFIRM_KIND)
        ).all()
    return states == {InboundState.PROCESSED} and len(confirms) == 1 and confirms[0] is not None


def test_wrong_codes_lock_outs_and_committed_confirmations_are_counted_by_the_web_edge(
    web: Web,
) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    before = {name: _count(name) for name in COUNTED_ON_THE_WEB}

    for _ in range(FREE_FAILURES + 1):
        refused = post_form(web.client, path, {"note": "", "code": "000000"})
        # The last one makes this browser wait (429).
        assert refused.status_code in (400, 429), refused.text
    elsewhere = web.fresh_client("192.0.2.7")
    elsewhere.get(path)
    done = post_form(elsewhere, path, {"note": "", "code": web.code("raj@riverside.example")})
    assert done.url.path == "/recorded", done.text

    rises = {name: _count(name) - before[name] for name in COUNTED_ON_THE_WEB}
    assert rises == {
        "mailflow_mfa_failures_total": FREE_FAILURES + 1,
        "mailflow_mfa_lockouts_total": 1,
        "mailflow_confirmations_committed_total": 1,
    }


COUNTED_ON_THE_WEB = (
    "mailflow_mfa_failures_total",
    "mailflow_mfa_lockouts_total",
    "mailflow_confirmations_committed_total",
)


def _count(name: str) -> float:
    # This process's own registry: the web app runs in the test's process.
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def test_only_what_the_outermost_transaction_commits_is_counted(engine: sa.Engine) -> None:
    counter = metrics.REPLIES_FAILED
    before = _count("mailflow_replies_failed_total")
    with Session(engine) as session:
        with session.begin():
            metrics.count_on_commit(session, counter)
            with pytest.raises(ValueError), session.begin_nested():
                metrics.count_on_commit(session, counter)  # its savepoint rolls back
                raise ValueError
            with session.begin_nested():
                metrics.count_on_commit(session, counter)
            # A released savepoint is not yet a commit.
            assert _count("mailflow_replies_failed_total") == before
        assert _count("mailflow_replies_failed_total") == before + 2

        with pytest.raises(ValueError), session.begin():
            metrics.count_on_commit(session, counter)
            raise ValueError
    assert _count("mailflow_replies_failed_total") == before + 2


def test_a_count_made_before_the_transaction_began_is_dropped_when_it_rolls_back(
    engine: sa.Engine,
) -> None:
    counter = metrics.REPLIES_FAILED
    before = _count("mailflow_replies_failed_total")
    with Session(engine) as session:
        # No transaction yet: the session begins one at its first query.
        metrics.count_on_commit(session, counter)
        session.execute(select(func.count()).select_from(User))
        session.rollback()
        session.commit()
    assert _count("mailflow_replies_failed_total") == before


def test_a_reply_read_from_a_polled_mailbox_is_counted_by_the_imap_poller(
    dovecot: DovecotAccount, database_url: str, session: Session, tmp_path: Path
) -> None:
    seed_people(session)
    issue(session)
    session.commit()
    key = session.scalar(
        select(Delivery.reply_key)
        .join(User, User.id == Delivery.user_id)
        .where(User.email == "ann@riverside.example")
    )
    assert key is not None
    port = free_port()
    env = environment(
        {
            "MAILFLOW_DATABASE_URL": database_url,
            "MAILFLOW_SECRET_KEY": SECRET_KEY,
            "MAILFLOW_MAIL_DOMAIN": MAIL_DOMAIN,
            "MAILFLOW_IMAP_URL": dovecot.url(),
            "MAILFLOW_IMAP_POLL_SECONDS": "1",
        }
    )
    poller = start("imap", ["imap", "--metrics-listen", f"127.0.0.1:{port}"], env, tmp_path)
    with running([poller]):
        wait_for_port(poller, port)
        dovecot.append(reply("ann@riverside.example", "RXA: complete", key=key))
        wait_until(
            lambda: value(scrape(port), "mailflow_replies_received_total", source="imap") == 1,
            timeout=60,
            what="the poller to store the reply",
        )
        assert get(port, "/readyz") == (200, "ready\n")
    session.rollback()  # a fresh snapshot
    assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1

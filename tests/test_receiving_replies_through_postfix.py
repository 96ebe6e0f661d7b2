"""A site runs Postfix in front of mailflow, set up as deploy/postfix/ says:
a reply sent to Postfix reaches `mailflow smtpd --lmtp` over LMTP, is
stored, and comes back as a link to confirm the answer; an address at the
mail domain that mailflow does not take is refused by Postfix itself.

mailflow's own emails go out through the same Postfix, as the deployment
has them, so a bounce finds its way back.  A real Postfix (its own folders
and ports, `postfix -c DIR start`), the real smtpd command in a process of
its own, the real queue worker, and a capturing relay as the
organisation's relay behind Postfix, on SQLite and PostgreSQL.  Without Postfix the tests fail
in CI and are skipped elsewhere."""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings, parse_relay
from mailflow.core.models import Delivery, DeliveryState, InboundMessage, PendingAnswer, User
from mailflow.core.runtime import Runtime
from mailflow.workers.queue import QueueWorker
from tests.support.environment import SECRET_KEY, missing_component
from tests.support.mail import a_reply, delivery_status_notification
from tests.support.postfix import PostfixInstance, postfix_binary
from tests.support.relay import CapturingRelay, Received, free_port
from tests.support.seed import issue, seed_people
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

DOMAIN = "alerts.test"
RAJ = "raj@riverside.example"


def start_lmtp_server(database_url: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    """`mailflow smtpd --lmtp` as systemd or compose would run it."""
    env = {
        **os.environ,
        "MAILFLOW_DATABASE_URL": database_url,
        "MAILFLOW_SECRET_KEY": SECRET_KEY,
        "MAILFLOW_MAIL_DOMAIN": DOMAIN,
        "MAILFLOW_INBOUND_ADDR": f"127.0.0.1:{port}",
    }
    for name in ("MAILFLOW_BROKER_URL", "MAILFLOW_CONFIG"):
        env.pop(name, None)
    with (folder / "smtpd.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mailflow", "smtpd", "--lmtp"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=folder,
        )


def lhlo_answered(port: int) -> bool:
    try:
        with smtplib.LMTP("127.0.0.1", port, timeout=5) as client:
            return client.ehlo()[0] == 250
    except OSError:
        return False


@pytest.fixture
def lmtp_port(database_url: str, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    process = start_lmtp_server(database_url, port, tmp_path)
    log = tmp_path / "smtpd.log"
    try:

        def listening() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")
            return lhlo_answered(port)

        wait_until(listening, timeout=60, what="mailflow smtpd --lmtp to listen")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def postfix(lmtp_port: int, relay: CapturingRelay) -> Iterator[PostfixInstance]:
    """Postfix in front of mailflow, sending outbound mail on to the
    capturing relay (the organisation's relay, as relayhost)."""
    if postfix_binary() is None:
        missing_component("Postfix (Debian package postfix)")
    if os.geteuid() != 0:
        missing_component("root, which Postfix's master process needs")
    with PostfixInstance(domain=DOMAIN, lmtp_port=lmtp_port, relay_port=relay.port) as instance:
        yield instance


@pytest.fixture
def worker(
    settings_for: Any, database_url: str, postfix: PostfixInstance, session: Session
) -> Iterator[Runtime]:
    """A published alert, its emails sent through Postfix (the relay
    mailflow is given), and the worker left running to process what
    arrives."""
    seed_people(session)
    issue(session)
    session.commit()
    through_postfix = parse_relay(f"smtp://127.0.0.1:{postfix.port}")
    runtime = Runtime(settings_for(database_url, smtp_relay=through_postfix))
    queue_worker = QueueWorker(runtime, poll_seconds=0.05)
    queue_worker.start()
    try:
        yield runtime
    finally:
        queue_worker.stop()
        runtime.close()


def sent_on(relay: CapturingRelay, count: int, postfix: PostfixInstance) -> list[Received]:
    try:
        return relay.wait_for(count, timeout=60)
    except AssertionError:
        raise AssertionError(f"{count} emails did not arrive:\n{postfix.log_text()}") from None


def test_a_reply_sent_to_postfix_comes_back_as_a_confirm_link(
    worker: Runtime,
    postfix: PostfixInstance,
    relay: CapturingRelay,
    session: Session,
) -> None:
    alert_emails = sent_on(relay, 6, postfix)
    # They went out through Postfix, which relayed them for mailflow.
    assert all(f"by mx.{DOMAIN} (Postfix)" in str(r.message["Received"]) for r in alert_emails)
    to_ann = next(r for r in alert_emails if r.recipients == ["ann@riverside.example"])
    reply_address = str(to_ann.message["Reply-To"])
    assert reply_address.startswith("reply+") and reply_address.endswith(f"@{DOMAIN}")

    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        refused = client.sendmail(
            "ann@riverside.example",
            [reply_address],
            a_reply("Ann Lee <ann@riverside.example>", reply_address, "RXA: complete"),
        )
    assert refused == {}

    confirm = sent_on(relay, 7, postfix)[-1]
    assert confirm.recipients == ["ann@riverside.example"]
    text = confirm.message.get_body(("plain",)).get_content()
    assert re.search(r"https://mailflow\.test/c/\S+", text)

    session.rollback()
    [stored] = session.scalars(select(InboundMessage)).all()
    # It came through Postfix: Postfix's own Received header is on it.
    assert f"by mx.{DOMAIN} (Postfix)".encode() in stored.raw
    assert [a.status for a in session.scalars(select(PendingAnswer))] == ["complete"]


def test_postfix_refuses_an_address_mailflow_does_not_take_and_stores_nothing(
    worker: Runtime,
    postfix: PostfixInstance,
    relay: CapturingRelay,
    session: Session,
) -> None:
    sent_on(relay, 6, postfix)
    with (
        smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.sendmail(
            "ann@riverside.example",
            [f"webmaster@{DOMAIN}"],
            a_reply("ann@riverside.example", f"webmaster@{DOMAIN}", "hello"),
        )
    [(code, text)] = refused.value.recipients.values()
    assert code == 550
    assert b"User unknown in relay recipient table" in text
    session.rollback()
    assert session.scalars(select(InboundMessage)).all() == []


def test_a_bounce_of_an_alert_email_comes_back_through_postfix(
    worker: Runtime,
    postfix: PostfixInstance,
    relay: CapturingRelay,
    session: Session,
) -> None:
    to_raj = next(r for r in sent_on(relay, 6, postfix) if r.recipients == [RAJ])
    # Bounces go to the envelope sender the alert email went out with.
    bounce_to = to_raj.mail_from
    assert bounce_to.startswith("bounce+") and bounce_to.endswith(f"@{DOMAIN}")

    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        assert client.sendmail("<>", [bounce_to], delivery_status_notification(bounce_to)) == {}

    def bounced() -> bool:
        session.rollback()
        raj = session.scalars(select(Delivery).join(User).where(User.email == RAJ)).one()
        return raj.state == DeliveryState.BOUNCED

    wait_until(bounced, timeout=60, what=f"Raj's delivery to bounce:\n{postfix.log_text()}")
    assert len(relay.received) == 6  # nothing sent back to a bounce


def test_the_deployed_transport_map_names_every_service_address() -> None:
    """deploy/postfix/mailflow_transport sends mailflow every address its
    inbound server takes by default, reply+KEY and bounce+KEY included."""
    transport = Path(__file__).resolve().parents[1] / "deploy" / "postfix" / "mailflow_transport"
    routed = {
        line.split()[0].split("@")[0]
        for line in transport.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert routed == {"reply", "bounce", *Settings.service_addresses}

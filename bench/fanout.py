"""Alert fan-out throughput: mailflow against a bare aiosmtplib loop.

Both send into an aiosmtpd sink that runs in a process of its own (so it does
not share the GIL with the sender), counts messages and answers 250.

* baseline: N prebuilt messages of the size mailflow makes, sent by a bare
  aiosmtplib loop over the same number of persistent connections;
* mailflow: an alert issued to N recipients, timed from the moment a
  QueueWorker starts until the database says every delivery is sent.

Run from the repository root::

    .venv/bin/python bench/fanout.py [--recipients 10000] [--connections 4]
        [--database-url URL] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import pstats
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.engine import Engine

from bench.common import (
    ALERT,
    MAIL_DOMAIN,
    USERS_PER_ORG,
    Sink,
    add_database_and_timeout_arguments,
    configure_logging,
    insert_memberships,
    insert_organisations,
    insert_users,
    make_parser,
    relay_settings,
)
from mailflow.alerts.alert_email import AlertEmailComposer
from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.deliveries import count_by_state, describe_deliveries
from mailflow.alerts.fanout import deliver_alert
from mailflow.alerts.issuing import issue_alert
from mailflow.config import Settings
from mailflow.core.models import (
    AlertAudience,
    Delivery,
    DeliveryState,
    Organisation,
    Role,
)
from mailflow.core.runtime import Runtime
from mailflow.db.engine import make_engine, make_sessionmaker
from mailflow.db.migrate import upgrade
from mailflow.workers.queue import QueueWorker

MAIL_FROM = f"bounces@{MAIL_DOMAIN}"
SAMPLE_MESSAGES = 16
COMPOSE_SAMPLE = 500
TARGET_RATIO = 0.9


# -------------------------------------------------------------- fixture data


@dataclass(frozen=True)
class Fixture:
    engine: Engine
    database_url: str
    org_type: str
    emails: list[str]


def populate(database_url: str, recipients: int) -> Fixture:
    """A migrated database with recipients/10 organisations of 10 responders
    each.  Names carry a random tag so a reused database does not clash."""
    engine = make_engine(database_url)
    upgrade(engine)
    tag = secrets.token_hex(2)
    org_type = f"bench-{tag}"
    now = datetime.now(UTC)
    n_orgs = math.ceil(recipients / USERS_PER_ORG)
    emails = [f"user{i:06d}.{tag}@{MAIL_DOMAIN}" for i in range(recipients)]
    with engine.begin() as conn:
        org_ids = insert_organisations(
            conn,
            org_type,
            {f"B{tag}{i:06d}": f"Bench organisation {i}" for i in range(n_orgs)},
            now,
        )
        user_ids = insert_users(
            conn,
            {email: f"Bench User {i}" for i, email in enumerate(emails)},
            f".{tag}@{MAIL_DOMAIN}",
            now,
        )
        insert_memberships(
            conn,
            (
                (user_ids[email], Role.RESPONDER, org_ids[f"B{tag}{i // USERS_PER_ORG:06d}"])
                for i, email in enumerate(emails)
            ),
            now,
        )
    return Fixture(engine, database_url, org_type, emails)


def make_settings(fixture: Fixture, port: int, connections: int) -> Settings:
    return relay_settings(fixture.database_url, port, connections, environ={})


def issue(fixture: Fixture, settings: Settings) -> int:
    spec = parse_alert_spec({**ALERT, "audience": {"types": [fixture.org_type]}}, source="bench")
    sessions = make_sessionmaker(fixture.engine)
    with sessions.begin() as session:
        issued = issue_alert(
            session, spec, now=datetime.now(UTC), actor="bench", mail_domain=settings.mail_domain
        )
        return issued.alert.id


# ------------------------------------------------------------------ baseline


_TO_LINE = re.compile(rb"^To: [^\r\n]*\r\n", re.MULTILINE)


def prebuild(fixture: Fixture, settings: Settings) -> tuple[list[tuple[str, bytes]], float]:
    """N (recipient, message bytes) made from a few messages mailflow's
    composer wrote, each with its own To; and the composer's time per
    message.  The alert they come from is issued and then rolled back."""
    spec = parse_alert_spec({**ALERT, "audience": {"types": [fixture.org_type]}}, source="bench")
    sessions = make_sessionmaker(fixture.engine)
    with sessions() as session:
        issued = issue_alert(
            session, spec, now=datetime.now(UTC), actor="bench", mail_domain=settings.mail_domain
        )
        alert = issued.alert
        audience = {
            org.id: org
            for org in session.scalars(
                select(Organisation)
                .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
                .where(AlertAudience.alert_id == alert.id)
            )
        }
        ids = list(
            session.scalars(
                select(Delivery.id)
                .where(Delivery.alert_id == alert.id)
                .order_by(Delivery.id)
                .limit(COMPOSE_SAMPLE)
            )
        )
        deliveries = describe_deliveries(session, ids)
        composer = AlertEmailComposer(alert, audience, settings, datetime.now(UTC))
        composer.compose(deliveries[0])  # templates compiled outside the timing
        started = time.perf_counter()
        composed = [composer.compose(d) for d in deliveries]
        compose_seconds = (time.perf_counter() - started) / len(composed)
        session.rollback()
    # Each sample split around its To line, which every copy gets anew.
    samples: list[tuple[bytes, bytes]] = []
    for message in composed[:SAMPLE_MESSAGES]:
        found = _TO_LINE.search(message.data)
        assert found is not None, "a composed message has no To line"
        samples.append((message.data[: found.start()], message.data[found.end() :]))
    out = []
    for i, email in enumerate(fixture.emails):
        head, tail = samples[i % len(samples)]
        out.append((email, head + f"To: Bench User {i} <{email}>\r\n".encode() + tail))
    return out, compose_seconds


async def _blast(port: int, messages: list[tuple[str, bytes]], connections: int) -> None:
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in messages:
        queue.put_nowait(item)

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        try:
            while True:
                try:
                    recipient, data = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await client.sendmail(MAIL_FROM, [recipient], data)
        finally:
            await client.quit()

    await asyncio.gather(*(sender() for _ in range(connections)))


def run_baseline(messages: list[tuple[str, bytes]], connections: int) -> float:
    with Sink() as sink:
        started = time.perf_counter()
        asyncio.run(_blast(sink.port, messages, connections))
        elapsed = time.perf_counter() - started
        if not sink.wait_for(len(messages), 10) or sink.count != len(messages):
            raise RuntimeError(f"baseline: sink got {sink.count} of {len(messages)}")
    return elapsed


# ------------------------------------------------------------------ mailflow


@dataclass(frozen=True)
class MailflowRun:
    seconds: float  # worker start until the database says all sent
    sink_seconds: float  # worker start until the sink had all messages
    sink_count: int
    states: dict[str, int]


def run_mailflow(fixture: Fixture, connections: int, n: int, timeout: float) -> MailflowRun:
    with Sink() as sink:
        settings = make_settings(fixture, sink.port, connections)
        alert_id = issue(fixture, settings)
        runtime = Runtime(settings)
        runtime.engine  # noqa: B018 - connect outside the timed part
        worker = QueueWorker(runtime, threads=2, poll_seconds=0.05)
        sessions = make_sessionmaker(fixture.engine)
        try:
            started = time.perf_counter()
            worker.start()
            sink.wait_for(n, timeout)
            sink_seconds = time.perf_counter() - started
            deadline = time.monotonic() + max(10.0, timeout - sink_seconds)
            while True:
                with sessions() as session:
                    states = count_by_state(session, alert_id=alert_id)
                if states[DeliveryState.SENT.value] >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            seconds = time.perf_counter() - started
        finally:
            worker.stop()
            runtime.close()
        time.sleep(0.2)  # anything sent twice would show up in the count now
        return MailflowRun(seconds, sink_seconds, sink.count, dict(states))


def profile_mailflow(fixture: Fixture, connections: int, n: int, top: int) -> str:
    """deliver_alert for a fresh alert, called in this thread under cProfile
    (the SMTP pool's event loop thread shows up as waiting).  One call sends
    for at most mailflow's time slice (60 s), so a large run is cut short."""
    with Sink() as sink:
        settings = make_settings(fixture, sink.port, connections)
        alert_id = issue(fixture, settings)
        runtime = Runtime(settings)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        try:
            profiler.runcall(deliver_alert, runtime, alert_id)
        finally:
            runtime.close()
        elapsed = time.perf_counter() - started
        out = io.StringIO()
        print(
            f"profile: one deliver_alert call sent {sink.count} of {n} in {elapsed:.2f}s "
            f"({sink.count / elapsed:.0f} msgs/s under cProfile)",
            file=out,
        )
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        return out.getvalue()


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    add_database_and_timeout_arguments(
        parser, "seconds to wait for mailflow (default: scaled to --recipients)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run deliver_alert under cProfile and print the top functions",
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat baseline and mailflow this many times on fresh databases; report medians",
    )
    args = parser.parse_args(argv)
    configure_logging()
    n: int = args.recipients
    connections: int = args.connections
    timeout: float = args.timeout or max(60.0, n / 20)

    rounds: list[tuple[float, float]] = []
    for round_number in range(args.rounds):
        result = run_round(args, n, connections, timeout, round_number)
        if result is None:
            return 1
        rounds.append(result)
    if len(rounds) > 1:
        ratios = sorted(mailflow / base for base, mailflow in rounds)
        print()
        print(
            f"over {len(rounds)} rounds: ratio median {statistics.median(ratios):.2f} "
            f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f}); baseline median "
            f"{statistics.median(b for b, _ in rounds):.0f} msgs/s, mailflow median "
            f"{statistics.median(m for _, m in rounds):.0f} msgs/s"
        )
    return 0


def run_round(
    args: argparse.Namespace, n: int, connections: int, timeout: float, round_number: int
) -> tuple[float, float] | None:
    """One baseline run and one mailflow run on a fresh database; returns
    both rates (messages per second), or None when a count check failed."""
    with tempfile.TemporaryDirectory(prefix="mailflow-bench-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        started = time.perf_counter()
        fixture = populate(url, n)
        # The baseline's messages come from mailflow's own composer, for size.
        messages, compose_seconds = prebuild(fixture, make_settings(fixture, 25, connections))
        setup = time.perf_counter() - started
        size = sum(len(d) for _, d in messages) / len(messages)
        print(
            f"round {round_number + 1}: setup {setup:.1f}s "
            f"({url.split(':', 1)[0]}, average message {size:.0f} bytes)"
        )

        baseline = run_baseline(messages, connections)
        run = run_mailflow(fixture, connections, n, timeout)
        profile = (
            profile_mailflow(fixture, connections, n, args.profile_top) if args.profile else ""
        )
        fixture.engine.dispose()

    baseline_rate = n / baseline
    mailflow_rate = n / run.seconds
    ratio = mailflow_rate / baseline_rate
    per_msg_ms = 1000 * run.seconds / n
    print(f"recipients:        {n}")
    print(f"connections:       {connections}")
    print(f"baseline:          {baseline_rate:8.0f} msgs/s  ({baseline:.2f}s)")
    print(
        f"mailflow:          {mailflow_rate:8.0f} msgs/s  ({run.seconds:.2f}s; sink had all "
        f"after {run.sink_seconds:.2f}s)"
    )
    print(f"ratio:             {ratio:8.2f}  (target >= {TARGET_RATIO})")
    print(
        f"mailflow per msg:  {per_msg_ms:.3f} ms wall, of which compose "
        f"{1000 * compose_seconds:.3f} ms (composer alone, timed on "
        f"{min(n, COMPOSE_SAMPLE)} messages)"
    )
    if profile:
        print()
        print(profile)
    ok = run.states.get(DeliveryState.SENT.value, 0) == n and run.sink_count == n
    if not ok:
        print(
            f"ERROR: database states {run.states}, sink received {run.sink_count} of {n}",
            file=sys.stderr,
        )
        return None
    print(f"check:             database says {n} sent, sink received exactly {run.sink_count}")
    return baseline_rate, mailflow_rate


if __name__ == "__main__":
    sys.exit(main())

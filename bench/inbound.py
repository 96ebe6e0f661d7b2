"""Inbound reply throughput: mailflow's SMTP edge against a bare aiosmtpd.

One client (a bare aiosmtplib loop over --connections persistent
connections) sends the same N prebuilt replies, each from a distinct seeded
user to that user's reply+KEY address, to:

1. baseline: an aiosmtpd server in a process of its own whose handler only
   answers 250;
2. mailflow storing: the real ``python -m mailflow smtpd`` in a subprocess,
   with no worker running, so only receiving and committing is measured; the
   database must then hold exactly N new inbound messages;
3. mailflow fully processed: a QueueWorker started in this process on those
   stored messages, timed until every one is processed and N confirm emails
   have reached an aiosmtpd counting sink (a process of its own).

Run from the repository root::

    .venv/bin/python bench/inbound.py [--replies 2000] [--connections 4]
        [--database-url URL]
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from bench.common import (
    ALERT,
    HOST,
    MAIL_DOMAIN,
    USER_DOMAIN,
    USERS_PER_ORG,
    Sink,
    add_database_and_timeout_arguments,
    configure_logging,
    free_port,
    insert_memberships,
    insert_organisations,
    insert_users,
    log_tail,
    make_parser,
    mark_alerts_sent,
    relay_settings,
    server_env,
    stop_process_group,
    wait_until_serving,
)
from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.reply_emails import CONFIRM_KIND
from mailflow.config import Settings
from mailflow.core.models import (
    Delivery,
    InboundMessage,
    InboundState,
    Job,
    OutgoingEmail,
    OutgoingState,
    Role,
    User,
)
from mailflow.core.runtime import Runtime
from mailflow.db.engine import make_engine, make_sessionmaker
from mailflow.db.migrate import upgrade
from mailflow.gateway.inbound_messages import PROCESS_INBOUND
from mailflow.workers.queue import QueueWorker

TARGET_RATIO = 0.6
PROCESSED_TARGET_RATIO = 0.12
CLIENT_HOSTNAME = "client.bench.example"

# What a mail client quotes under a reply: the top of the alert email.
QUOTED = """\
Remote code execution in Example VPN Gateway (HIGH)

A critical flaw in the web interface of Example VPN Gateway lets an
unauthenticated attacker run code on the appliance. It is being exploited.

Affected: Example VPN Gateway 9.0 to 9.4, Example VPN Gateway 10.0 to 10.1
CVE: CVE-2026-41234

What to do: upgrade to 9.4.2 or 10.1.1. If you cannot upgrade at once,
disable the web interface on external addresses and review logs for signs
of compromise.

Reply to this email with one line per organisation, for example:
  {code}: complete
"""


# -------------------------------------------------------------- fixture data


@dataclass(frozen=True)
class Reply:
    sender: str
    recipient: str
    data: bytes


@dataclass(frozen=True)
class Fixture:
    engine: Engine
    database_url: str
    alert_id: int
    replies: list[Reply]


def populate(database_url: str, n: int) -> tuple[Engine, str, list[tuple[str, str]]]:
    """A migrated database with n responders, 10 to an organisation, of an
    organisation type of their own.  Returns the engine, the type and each
    user's (email, organisation code).  Names carry a random tag so that a
    reused database does not clash."""
    engine = make_engine(database_url)
    upgrade(engine)
    tag = secrets.token_hex(2)
    org_type = f"bench-in-{tag}"
    now = datetime.now(UTC)
    # Codes as people write them: upper case, at most 10 characters.
    codes = [f"I{tag.upper()}{i:05d}" for i in range(math.ceil(n / USERS_PER_ORG))]
    people = [(f"user{i:06d}.{tag}@{USER_DOMAIN}", codes[i // USERS_PER_ORG]) for i in range(n)]
    with engine.begin() as conn:
        org_ids = insert_organisations(
            conn, org_type, {code: f"Bench organisation {code}" for code in codes}, now
        )
        user_ids = insert_users(
            conn,
            {email: f"Bench User {i}" for i, (email, _) in enumerate(people)},
            f".{tag}@{USER_DOMAIN}",
            now,
        )
        insert_memberships(
            conn,
            ((user_ids[email], Role.RESPONDER, org_ids[code]) for email, code in people),
            now,
        )
    return engine, org_type, people


def issue_and_mark_sent(engine: Engine, org_type: str) -> tuple[int, str]:
    """Issue the alert to the organisation type, and mark its deliveries
    sent and its delivery job done, so that the worker later sends only
    confirm emails.  Returns the alert's id and reference."""
    spec = parse_alert_spec({**ALERT, "audience": {"types": [org_type]}}, source="bench")
    now = datetime.now(UTC)
    with make_sessionmaker(engine).begin() as session:
        issued = issue_alert(session, spec, now=now, actor="bench", mail_domain=MAIL_DOMAIN)
        alert_id, reference = issued.alert.id, issued.alert.reference
        mark_alerts_sent(session, [alert_id], now)
    return alert_id, reference


def build_reply(
    i: int, email: str, code: str, reply_key: str, reference: str, alert_message_id: str
) -> Reply:
    """A person's reply as a mail client writes it: CRLF line ends, a fresh
    Message-ID, the answer on top and the alert quoted below."""
    recipient = f"reply+{reply_key}@{MAIL_DOMAIN}"
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = f"Bench User {i} <{email}>"
    message["To"] = f"Cyber alerts <{recipient}>"
    message["Subject"] = f"Re: [HIGH] {reference} Remote code execution in Example VPN Gateway"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(idstring=f"r{i}", domain=CLIENT_HOSTNAME)
    message["In-Reply-To"] = f"<{alert_message_id}>"
    message["References"] = f"<{alert_message_id}>"
    quoted = "".join(f"> {line}".rstrip() + "\n" for line in QUOTED.format(code=code).splitlines())
    message.set_content(
        f"{code}: complete\n\nThanks,\nBench User {i}\n\n"
        f"On Mon, 2 Mar 2026 at 09:00, Cyber alerts <alerts@{MAIL_DOMAIN}> wrote:\n{quoted}"
    )
    return Reply(email, recipient, bytes(message))


def make_fixture(database_url: str, n: int) -> Fixture:
    engine, org_type, people = populate(database_url, n)
    alert_id, reference = issue_and_mark_sent(engine, org_type)
    with engine.connect() as conn:
        keys = {
            email: (reply_key, message_id)
            for email, reply_key, message_id in conn.execute(
                select(User.email, Delivery.reply_key, Delivery.message_id)
                .select_from(Delivery)
                .join(User, User.id == Delivery.user_id)
                .where(Delivery.alert_id == alert_id)
            )
        }
    if len(keys) != n:
        raise RuntimeError(f"setup: the alert has {len(keys)} deliveries, expected {n}")
    replies = [
        build_reply(i, email, code, keys[email][0], reference, keys[email][1])
        for i, (email, code) in enumerate(people)
    ]
    return Fixture(engine, database_url, alert_id, replies)


# ------------------------------------------------------------------ client


@dataclass
class Blast:
    seconds: float = 0.0
    accepted: int = 0
    errors: list[str] = field(default_factory=list)


async def _blast(port: int, replies: list[Reply], connections: int) -> Blast:
    """Send every reply over ``connections`` persistent connections, opened
    (and greeted with EHLO) before the clock starts; closed after it stops."""
    result = Blast()
    queue: asyncio.Queue[Reply] = asyncio.Queue()
    for reply in replies:
        queue.put_nowait(reply)
    clients = [
        aiosmtplib.SMTP(hostname=HOST, port=port, local_hostname=CLIENT_HOSTNAME, timeout=60)
        for _ in range(connections)
    ]
    for client in clients:
        await client.connect()
        await client.ehlo()

    async def sender(client: aiosmtplib.SMTP) -> None:
        while True:
            try:
                reply = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await client.sendmail(reply.sender, [reply.recipient], reply.data)
            except aiosmtplib.SMTPServerDisconnected as exc:
                result.errors.append(f"{reply.recipient}: disconnected: {exc}")
                return
            except aiosmtplib.SMTPException as exc:
                result.errors.append(f"{reply.recipient}: {exc}")
                continue
            result.accepted += 1

    started = time.perf_counter()
    await asyncio.gather(*(sender(c) for c in clients))
    result.seconds = time.perf_counter() - started
    for client in clients:
        if client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()
    return result


def blast(port: int, replies: list[Reply], connections: int, timeout: float) -> Blast:
    return asyncio.run(asyncio.wait_for(_blast(port, replies, connections), timeout))


# ----------------------------------------------------------------- baseline


@dataclass(frozen=True)
class Baseline:
    blast: Blast
    sink_count: int


def run_baseline(replies: list[Reply], connections: int, timeout: float) -> Baseline:
    with Sink() as sink:
        result = blast(sink.port, replies, connections, timeout)
        time.sleep(0.1)
        return Baseline(result, sink.count)


# ------------------------------------------------------------ mailflow smtpd


def _greets(port: int) -> bool:
    """Whether the server at ``port`` greets with 220 (the smtpd only
    listens once its database engine is made and the schema checked)."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            if sock.recv(512).startswith(b"220"):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
                return True
    except OSError:
        pass
    return False


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    state = wait_until_serving(process, lambda: _greets(port), timeout)
    if state == "exited":
        raise RuntimeError(f"mailflow smtpd exited with {process.returncode}")
    if state == "timed out":
        raise RuntimeError(f"mailflow smtpd did not listen on port {port} within {timeout:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGINT, which the smtpd takes as it takes SIGTERM, and a profiler
    # wrapped around it as Ctrl-C, writing its output.
    stop_process_group(process, signal.SIGINT)


@dataclass(frozen=True)
class Storing:
    blast: Blast
    stored: int  # inbound messages the database gained
    first_id: int  # ids of this run's messages are greater
    returncode: int
    log_tail: str


def last_inbound_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.max(InboundMessage.id), 0))) or 0)


def run_storing(
    fixture: Fixture,
    connections: int,
    timeout: float,
    tmp: Path,
    wrapper: list[str],
    processes: int = 1,
) -> Storing:
    """The real `mailflow smtpd` (``processes`` of them on one port) in a
    subprocess; no worker anywhere."""
    first_id = last_inbound_id(fixture.engine)
    port = free_port()
    config_file = tmp / "empty.toml"
    config_file.write_text("")
    log_path = tmp / "smtpd.log"
    if wrapper:
        # The smtpd runs in the temporary directory: find the wrapper here.
        found = shutil.which(wrapper[0])
        wrapper = [os.path.abspath(found) if found else wrapper[0], *wrapper[1:]]
    command = [
        *wrapper,
        sys.executable,
        "-m",
        "mailflow",
        "smtpd",
        "--listen",
        f"{HOST}:{port}",
        *(["--processes", str(processes)] if processes != 1 else []),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=server_env(fixture.database_url, config_file),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_listening(port, process, 60)
            result = blast(port, fixture.replies, connections, timeout)
        finally:
            _stop(process)
    with fixture.engine.connect() as conn:
        stored = int(conn.scalar(select(func.count()).where(InboundMessage.id > first_id)) or 0)
    tail = log_tail(log_path)
    return Storing(result, stored, first_id, process.returncode, tail)


# --------------------------------------------------------- mailflow worker


@dataclass(frozen=True)
class Processing:
    seconds: float  # worker start until all processed and the sink had n
    processed_seconds: float  # worker start until the database said all processed
    states: dict[str, int]
    confirms_sent: int
    sink_count: int
    failures: list[str]


def make_settings(fixture: Fixture, sink_port: int, connections: int, tmp: Path) -> Settings:
    return relay_settings(
        fixture.database_url,
        sink_port,
        connections,
        environ={"MAILFLOW_CONFIG": str(tmp / "empty.toml")},
    )


def _inbound_states(engine: Engine, first_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(InboundMessage.state, func.count())
            .where(InboundMessage.id > first_id)
            .group_by(InboundMessage.state)
        )
        return {InboundState(state).value: int(count) for state, count in rows}


def _confirms_sent(engine: Engine, first_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count()).where(
                    OutgoingEmail.inbound_message_id > first_id,
                    OutgoingEmail.kind == CONFIRM_KIND,
                    OutgoingEmail.state == OutgoingState.SENT,
                )
            )
            or 0
        )


def _failures(engine: Engine, first_id: int) -> list[str]:
    """The errors failed messages and jobs were left with, most common first."""
    with engine.connect() as conn:
        errors = Counter(
            conn.scalars(
                select(InboundMessage.error).where(
                    InboundMessage.id > first_id, InboundMessage.state == InboundState.FAILED
                )
            )
        )
        errors.update(conn.scalars(select(Job.last_error).where(Job.last_error.is_not(None))))
    return [f"{count} x {error}" for error, count in errors.most_common(3)]


def run_processing(
    fixture: Fixture,
    first_id: int,
    n: int,
    connections: int,
    threads: int,
    poll_seconds: float,
    timeout: float,
    tmp: Path,
    processes: int = 0,
) -> Processing:
    """A QueueWorker in this process (or, with ``processes``, the real
    `mailflow worker --processes N` in a subprocess) on the stored replies,
    sending to a counting sink; timed from the moment the jobs fall due
    until the database says every reply is processed and the sink has n
    messages."""
    # Looks on without taking SQLite's write lock (BEGIN, not IMMEDIATE).
    reader = make_engine(fixture.database_url, immediate=False)
    processed = InboundState.PROCESSED.value
    with Sink() as sink:
        settings = make_settings(fixture, sink.port, connections, tmp)
        start, stop = (
            _worker_processes(fixture, settings, processes, threads, tmp)
            if processes
            else _worker_here(settings, threads, poll_seconds)
        )
        processed_seconds = math.inf
        try:
            _hold_jobs(fixture.engine, first_id)
            start()
            started = _release_jobs(fixture.engine, first_id)
            deadline = time.monotonic() + timeout
            next_look = 0.0
            while time.monotonic() < deadline:
                now = time.perf_counter()
                if processed_seconds == math.inf and now >= next_look:
                    if _inbound_states(reader, first_id).get(processed, 0) >= n:
                        processed_seconds = now - started
                    next_look = now + 0.05
                if processed_seconds != math.inf and sink.count >= n:
                    break
                time.sleep(0.002)
            seconds = time.perf_counter() - started
        finally:
            stop()
        time.sleep(0.3)  # anything sent twice would show up in the count now
        states = _inbound_states(reader, first_id)
        confirms = _confirms_sent(reader, first_id)
        count = sink.count
        failures = _failures(reader, first_id)
    reader.dispose()
    return Processing(seconds, processed_seconds, states, confirms, count, failures)


def _stored_jobs(first_id: int) -> Any:
    return select(Job.id).where(
        Job.kind == PROCESS_INBOUND,
        Job.payload["inbound_message_id"].as_integer() > first_id,
    )


def _hold_jobs(engine: Engine, first_id: int) -> None:
    """The stored replies' jobs wait until the worker is up, so its start
    (a subprocess importing mailflow) is not timed."""
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id.in_(_stored_jobs(first_id)))
            .values(run_after=datetime(2999, 1, 1, tzinfo=UTC))
        )


def _release_jobs(engine: Engine, first_id: int) -> float:
    """The jobs fall due now: the clock starts."""
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id.in_(_stored_jobs(first_id)))
            .values(run_after=datetime.now(UTC))
        )
    return time.perf_counter()


def _worker_here(
    settings: Settings, threads: int, poll_seconds: float
) -> tuple[Callable[[], None], Callable[[], None]]:
    runtime = Runtime(settings)
    runtime.engine  # noqa: B018 - connect outside the timed part
    worker = QueueWorker(runtime, threads=threads, poll_seconds=poll_seconds)

    def stop() -> None:
        worker.stop()
        runtime.close()

    return worker.start, stop


def _worker_processes(
    fixture: Fixture, settings: Settings, processes: int, threads: int, tmp: Path
) -> tuple[Callable[[], None], Callable[[], None]]:
    assert settings.smtp_relay is not None
    env = server_env(fixture.database_url, tmp / "empty.toml")
    env.update(
        MAILFLOW_SMTP_RELAY=f"smtp://{HOST}:{settings.smtp_relay.port}",
        MAILFLOW_SMTP_CONNECTIONS=str(settings.smtp_connections),
    )
    log_path = tmp / "worker.log"
    command = [sys.executable, "-m", "mailflow", "worker"]
    command += ["--processes", str(processes), "--threads", str(threads)]
    holder: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                cwd=tmp,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        holder.append(process)
        ready = wait_until_serving(
            process, lambda: log_path.read_text().count("worker started") >= processes, 120
        )
        if ready != "serving":
            raise RuntimeError(f"mailflow worker {ready}:\n{log_tail(log_path)}")

    def stop() -> None:
        for process in holder:
            _stop(process)

    return start, stop


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--replies", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    add_database_and_timeout_arguments(
        parser, "seconds allowed for each phase (default: scaled to --replies)"
    )
    parser.add_argument("--worker-threads", type=int, default=2, help="QueueWorker threads")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        help="process with `mailflow worker --processes N` in a subprocess "
        "(default 0: a QueueWorker in the bench process)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=0.05,
        help="the worker's dispatch interval (mailflow's default is 1.0)",
    )
    parser.add_argument(
        "--smtpd-wrapper",
        default="",
        help="a command to run the smtpd under, e.g. a profiler ending in '--' (split on "
        "spaces; it runs in a temporary directory, so give absolute output paths)",
    )
    parser.add_argument(
        "--stored-only",
        action="store_true",
        help="stop after the stored phase (skip the worker processing the replies)",
    )
    parser.add_argument(
        "--smtpd-processes",
        type=int,
        default=1,
        help="run the smtpd with --processes N (server processes on one port)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    n: int = args.replies
    if not 1 <= n <= USERS_PER_ORG * 100_000:
        parser.error("--replies must be between 1 and 1000000 (organisation codes have 5 digits)")
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    connections: int = args.connections
    timeout: float = args.timeout or max(120.0, n / 10)

    with tempfile.TemporaryDirectory(prefix="mailflow-bench-inbound-") as tmp_name:
        tmp = Path(tmp_name)
        url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
        started = time.perf_counter()
        fixture = make_fixture(url, n)
        setup = time.perf_counter() - started
        size = sum(len(r.data) for r in fixture.replies) / n
        print(
            f"setup:              {setup:.1f}s ({url.split(':', 1)[0]}, "
            f"average reply {size:.0f} bytes)"
        )

        baseline = run_baseline(fixture.replies, connections, timeout)
        storing = run_storing(
            fixture,
            connections,
            timeout,
            tmp,
            args.smtpd_wrapper.split(),
            args.smtpd_processes,
        )
        problems = []
        if baseline.blast.accepted != n or baseline.sink_count != n:
            problems.append(
                f"baseline: {baseline.blast.accepted} of {n} accepted, sink counted "
                f"{baseline.sink_count}; {baseline.blast.errors[:3]}"
            )
        if storing.blast.accepted != n or storing.stored != n:
            problems.append(
                f"storing: {storing.blast.accepted} of {n} accepted, the database gained "
                f"{storing.stored} inbound messages; {storing.blast.errors[:3]}"
            )
        if storing.returncode != 0:
            problems.append(f"mailflow smtpd exited with {storing.returncode}:\n{storing.log_tail}")
        processing = None
        if storing.stored == n and not args.stored_only:  # else it could never finish n
            processing = run_processing(
                fixture,
                storing.first_id,
                n,
                connections,
                args.worker_threads,
                args.poll_seconds,
                timeout,
                tmp,
                args.worker_processes,
            )
        fixture.engine.dispose()

    base_rate = n / baseline.blast.seconds
    store_rate = n / storing.blast.seconds
    print(f"replies:            {n}")
    print(f"connections:        {connections}")
    print(f"smtpd processes:    {args.smtpd_processes}")
    print(
        f"baseline:           {base_rate:7.0f} replies/s accepted ({baseline.blast.seconds:.2f}s)"
    )
    print(
        f"mailflow stored:    {store_rate:7.0f} replies/s ({storing.blast.seconds:.2f}s)  "
        f"ratio {store_rate / base_rate:.2f} (target >= {TARGET_RATIO})"
    )
    if processing is not None:
        full_rate = n / processing.seconds
        print(
            f"mailflow processed: {full_rate:7.0f} replies/s ({processing.seconds:.2f}s; the "
            f"database said all processed after {processing.processed_seconds:.2f}s)  "
            f"ratio {full_rate / base_rate:.2f} (target >= {PROCESSED_TARGET_RATIO})"
        )
        processed = processing.states.get(InboundState.PROCESSED.value, 0)
        if processed != n or processing.confirms_sent != n or processing.sink_count != n:
            problems.append(
                f"processing: inbound states {processing.states}, {processing.confirms_sent} "
                f"confirm emails sent, sink received {processing.sink_count} of {n}; "
                f"errors: {processing.failures}"
            )
    if problems:
        for problem in problems:
            print(f"ERROR: {problem}", file=sys.stderr)
        return 1
    if processing is None:
        print(f"check:              baseline sink got {n}; database gained {n} inbound messages")
    else:
        print(
            f"check:              baseline sink got {n}; database gained {n} inbound messages, "
            f"all processed, {n} confirm emails sent; confirm sink got exactly {n}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

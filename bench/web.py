"""Web throughput: mailflow's confirmation pages against a bare 200.

Every server is uvicorn in a process of its own, set up by mailflow's own
``web_server`` (same loop, HTTP implementation, worker and options); one
client in this process (a small HTTP/1.1 keep-alive client on asyncio
streams) sends --requests requests over --concurrency connections, opened
before the clock starts:

1. baseline: a one-route Starlette app answering a bare 200;
2. ``GET /r/TOKEN``: the real ``python -m mailflow web`` against a prepared
   database, each connection a verified person showing their own links;
3. ``POST /r/TOKEN``: each request commits one answer with a fresh link
   (CSRF check, token check, single use, record_answers, receipts queued).
   Every connection's session gave one real TOTP code first, outside the
   timing; afterwards the database must hold exactly one new answer per
   request and every response must have been a 303.

Run from the repository root::

    .venv/bin/python bench/web.py [--requests 2000] [--concurrency 8]
        [--workers 1] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench.common import (
    ALERT,
    HOST,
    MAIL_DOMAIN,
    SECRET_KEY,
    USER_DOMAIN,
    add_database_and_timeout_arguments,
    configure_logging,
    free_port,
    insert_memberships,
    insert_organisations,
    insert_users,
    log_tail,
    make_parser,
    mark_alerts_sent,
    server_env,
    stop_process_group,
    wait_until_serving,
    web_settings,
)
from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.statuses import AnswerStatus
from mailflow.core import pending
from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import (
    Answer,
    Delivery,
    OutgoingEmail,
    PendingAction,
    Role,
)
from mailflow.core.pages.security import session_cookie_name
from mailflow.core.second_factor import mfa, recovery_codes
from mailflow.db.engine import make_engine, make_sessionmaker
from mailflow.db.migrate import upgrade

RECEIPT_KIND = "receipt"
NOTE = "Patched to 9.4.2 on all gateways"

_CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


# ------------------------------------------------------------ bare server


async def _bare(request: Request) -> Response:
    return PlainTextResponse("ok")


def serve_bare(port: int) -> None:
    """The baseline server (run in its own process): mailflow's own
    ``web_server``, with the app it builds swapped for one bare route."""
    import mailflow.web
    from mailflow.cli.web_command import web_server
    from mailflow.core.runtime import Runtime

    app = Starlette(routes=[Route("/", _bare, methods=["GET"])])

    def bare_app(runtime: Runtime) -> Starlette:
        return app

    mailflow.web.create_app = bare_app
    web_server(Runtime(web_settings("sqlite://")), HOST, port).run()


# ---------------------------------------------------------------- servers


class Server:
    """A server in a subprocess of its own process group, logging to a
    file; stopped with SIGTERM, on which uvicorn finishes requests in
    flight, shuts down, then raises the signal again (so the exit status
    is -SIGTERM; SIGINT would end `mailflow web` as click's "Aborted!")."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = log
        self._command = command  # "{port}" in it is replaced by the port
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self, timeout: float = 60) -> None:
        command = [c.replace("{port}", str(self.port)) for c in self._command]
        with self.log.open("wb") as log_file:
            self.process = subprocess.Popen(
                command,
                env=self._env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = wait_until_serving(self.process, lambda: asyncio.run(_probe(self.port)), timeout)
        if state == "exited":
            raise RuntimeError(f"{self.name} server exited:\n{self.log_tail()}")
        if state == "timed out":
            self.stop()
            raise RuntimeError(f"{self.name} server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        process = self.process
        if process is not None:
            stop_process_group(process, signal.SIGTERM)
            self.returncode = process.returncode

    def log_tail(self) -> str:
        return log_tail(self.log)


async def _probe(port: int) -> bool:
    try:
        conn = await Connection.open(port, "")
    except OSError:
        return False
    try:
        reply = await asyncio.wait_for(conn.request("GET", "/"), 5)
        return reply.status == 200
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return False
    finally:
        await conn.close()


# ----------------------------------------------------------------- client


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class Connection:
    """One keep-alive HTTP/1.1 connection carrying one session cookie."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, cookie: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = f"{HOST}:{port}".encode()
        self.cookie_name = cookie
        self.cookie: str | None = None

    @classmethod
    async def open(cls, port: int, cookie_name: str) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer, port, cookie_name)

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host]
        if self.cookie is not None:
            head.append(f"Cookie: {self.cookie_name}={self.cookie}".encode())
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            head.append(b"Content-Type: application/x-www-form-urlencoded")
            head.append(b"Content-Length: %d" % len(body))
        self.writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        reply = Reply(status, headers, b"")
        length = reply.header("content-length")
        if length is not None:
            content = await self.reader.readexactly(int(length))
        elif reply.header("transfer-encoding") == "chunked":
            content = await self._chunks()
        else:
            raise ValueError(f"{method} {path}: a response with no length")
        for name, value in headers:
            if name == "set-cookie" and value.startswith(self.cookie_name + "="):
                cookie = value.split(";", 1)[0].split("=", 1)[1]
                self.cookie = None if cookie == "null" else cookie
        return Reply(status, headers, content)

    async def _chunks(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    form: dict[str, str] | None = None


@dataclass
class Run:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000


def expect_ok(reply: Reply) -> str | None:
    return None if reply.status == 200 else f"status {reply.status}"


def expect_form(reply: Reply) -> str | None:
    if reply.status != 200:
        return f"status {reply.status}"
    return None if _CSRF.search(reply.body) else "a 200 page without the answer form"


def expect_recorded(reply: Reply) -> str | None:
    if reply.status != 303 or reply.header("location") != "/recorded":
        return f"status {reply.status} to {reply.header('location')}"
    return None


async def drive(
    connections: list[Connection], plans: list[list[Call]], check: Callable[[Reply], str | None]
) -> Run:
    """Each connection sends its own calls one after another; the clock
    runs from the first request sent to the last response read."""
    run = Run()

    async def client(conn: Connection, calls: list[Call]) -> None:
        for call in calls:
            started = time.perf_counter()
            reply = await conn.request(call.method, call.path, call.form)
            run.latencies.append(time.perf_counter() - started)
            run.statuses[reply.status] += 1
            problem = check(reply)
            if problem is not None:
                run.problems.append(f"{call.method} {call.path[:40]}...: {problem}")

    started = time.perf_counter()
    await asyncio.gather(*(client(c, p) for c, p in zip(connections, plans, strict=True)))
    run.seconds = time.perf_counter() - started
    return run


# ------------------------------------------------------------ fixture data


@dataclass(frozen=True)
class Person:
    user_id: int
    secret: str
    links: list[str]  # paths /r/TOKEN; the first one is for the warm-up


@dataclass(frozen=True)
class Fixture:
    engine: Engine
    people: list[Person]
    user_ids: list[int]
    tag: str


def populate(database_url: str, people: int, links_each: int) -> Fixture:
    """``people`` organisations of a type of their own, each with one
    responder (who gets an authenticator app) and one administrator (who
    gets receipts too), and ``links_each`` alerts to them all; each
    responder gets a status link per alert, as the alert email carries."""
    engine = make_engine(database_url)
    upgrade(engine)
    tag = secrets.token_hex(2)
    org_type = f"bench-web-{tag}"
    now = datetime.now(UTC)
    codes = [f"W{tag.upper()}{i:05d}" for i in range(people)]
    staff = [
        (f"{role.value}{i:05d}.{tag}@{USER_DOMAIN}", role, codes[i])
        for i in range(people)
        for role in (Role.RESPONDER, Role.ADMINISTRATOR)
    ]
    with engine.begin() as conn:
        org_ids = insert_organisations(
            conn, org_type, {code: f"Bench organisation {code}" for code in codes}, now
        )
        ids = insert_users(
            conn,
            {email: f"Bench {role.value} {i}" for i, (email, role, _) in enumerate(staff)},
            f".{tag}@{USER_DOMAIN}",
            now,
        )
        insert_memberships(
            conn, ((ids[email], role, org_ids[code]) for email, role, code in staff), now
        )
    responders = [(ids[e], org_ids[c]) for e, r, c in staff if r is Role.RESPONDER]

    sessions = make_sessionmaker(engine)
    # Set up ten minutes ago, so that codes of now are unused.  Recovery
    # codes (never used here) are hashed at a low scrypt cost, as in tests.
    then = now - timedelta(minutes=10)
    scrypt_n, recovery_codes.SCRYPT_N = recovery_codes.SCRYPT_N, 2**10
    totp_secrets = {}
    try:
        with sessions.begin() as session:
            for user_id, _ in responders:
                secret = mfa.start_enrolment(
                    session, user_id=user_id, secret_key=SECRET_KEY, now=then
                )
                mfa.finish_enrolment(
                    session,
                    user_id=user_id,
                    code=pyotp.TOTP(secret).at(then),
                    secret_key=SECRET_KEY,
                    now=then,
                )
                totp_secrets[user_id] = secret
    finally:
        recovery_codes.SCRYPT_N = scrypt_n

    spec = parse_alert_spec({**ALERT, "audience": {"types": [org_type]}}, source="bench")
    alert_ids = []
    with sessions.begin() as session:
        for _ in range(links_each):
            issued = issue_alert(session, spec, now=now, actor="bench", mail_domain=MAIL_DOMAIN)
            alert_ids.append(issued.alert.id)
        mark_alerts_sent(session, alert_ids, now)
        deliveries = {
            (user_id, alert_id): delivery_id
            for delivery_id, user_id, alert_id in session.execute(
                select(Delivery.id, Delivery.user_id, Delivery.alert_id).where(
                    Delivery.alert_id.in_(alert_ids)
                )
            )
        }

    tokens = ANSWER_LINK.tokens(web_settings(database_url))
    out = []
    for user_id, org_id in responders:
        links = [
            "/r/"
            + tokens.sign(
                {
                    "d": deliveries[user_id, alert_id],
                    "u": user_id,
                    "a": alert_id,
                    "o": org_id,
                    "s": AnswerStatus.COMPLETE.value,
                }
            )
            for alert_id in alert_ids
        ]
        out.append(Person(user_id, totp_secrets[user_id], links))
    return Fixture(engine, out, [u for u, _ in responders], tag)


@dataclass(frozen=True)
class Counts:
    answers: int
    used_tokens: int
    receipts: int


def counts(fixture: Fixture) -> Counts:
    with fixture.engine.connect() as conn:

        def count(*where: Any) -> int:
            return int(conn.scalar(select(func.count()).where(*where)) or 0)

        return Counts(
            answers=count(Answer.user_id.in_(fixture.user_ids)),
            used_tokens=count(
                PendingAction.kind == pending.ANSWER_LINK_USE,
                PendingAction.user_id.in_(fixture.user_ids),
            ),
            receipts=count(
                OutgoingEmail.kind == RECEIPT_KIND,
                OutgoingEmail.recipient.like(f"%.{fixture.tag}@{USER_DOMAIN}"),
            ),
        )


# -------------------------------------------------------------- scenarios


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def open_all(port: int, cookie_name: str, n: int) -> list[Connection]:
    return list(await asyncio.gather(*(Connection.open(port, cookie_name) for _ in range(n))))


async def bare_scenario(port: int, n: int, concurrency: int) -> Run:
    connections = await open_all(port, "", concurrency)
    try:
        plans = [[Call("GET", "/")] * k for k in split(n, concurrency)]
        return await drive(connections, plans, expect_ok)
    finally:
        for conn in connections:
            await conn.close()


async def mailflow_scenarios(
    port: int, cookie_name: str, fixture: Fixture, n: int
) -> tuple[Run, Run, Counts]:
    """Warm-up (one GET and one POST with a TOTP code on each connection,
    untimed), then the GETs, then the POSTs; the counts are taken between
    the warm-up and the POSTs."""
    connections = await open_all(port, cookie_name, len(fixture.people))
    try:
        csrf = []
        for conn, person in zip(connections, fixture.people, strict=True):
            page = await conn.request("GET", person.links[0])
            found = _CSRF.search(page.body)
            if page.status != 200 or found is None:
                raise RuntimeError(f"warm-up GET: status {page.status}, no CSRF token")
            csrf.append(found.group(1).decode())
            code = pyotp.TOTP(person.secret).now()
            done = await conn.request(
                "POST", person.links[0], {"csrf_token": csrf[-1], "note": NOTE, "code": code}
            )
            if expect_recorded(done) is not None:
                raise RuntimeError(f"warm-up POST with a TOTP code: status {done.status}")
        before = await asyncio.to_thread(counts, fixture)
        sizes = split(n, len(connections))
        links = [p.links[1 : 1 + k] for p, k in zip(fixture.people, sizes, strict=True)]
        gets = await drive(
            connections, [[Call("GET", path) for path in ls] for ls in links], expect_form
        )
        posts = await drive(
            connections,
            [
                [Call("POST", path, {"csrf_token": token, "note": NOTE}) for path in ls]
                for ls, token in zip(links, csrf, strict=True)
            ],
            expect_recorded,
        )
        return gets, posts, before
    finally:
        for conn in connections:
            await conn.close()


# ------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument(
        "--workers", type=int, default=1, help="mailflow web --workers (the mailflow server only)"
    )
    add_database_and_timeout_arguments(
        parser, "seconds allowed for each scenario (default: scaled to --requests)"
    )
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    configure_logging()
    n: int = args.requests
    concurrency: int = args.concurrency
    if n < 1 or not 1 <= concurrency <= min(n, 10_000):
        parser.error("--requests must be at least 1, --concurrency between 1 and --requests")
    timeout: float = args.timeout or max(120.0, n / 10)

    with tempfile.TemporaryDirectory(prefix="mailflow-bench-web-") as tmp_name:
        tmp = Path(tmp_name)
        url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
        config_file = tmp / "empty.toml"
        config_file.write_text("")
        env = server_env(url, config_file)
        started = time.perf_counter()
        fixture = populate(url, concurrency, math.ceil(n / concurrency) + 1)
        print(
            f"setup:        {time.perf_counter() - started:.1f}s ({url.split(':', 1)[0]}; "
            f"{concurrency} organisations, each a responder and an administrator; "
            f"{len(fixture.people[0].links)} alerts)"
        )
        cookie_name = session_cookie_name(web_settings(url))

        bare = Server(
            "bare",
            [sys.executable, os.path.abspath(__file__), "--serve-bare", "{port}"],
            env,
            tmp / "bare.log",
        )
        bare.start()
        try:
            base = asyncio.run(asyncio.wait_for(bare_scenario(bare.port, n, concurrency), timeout))
        finally:
            bare.stop()

        web = Server(
            "mailflow",
            [
                sys.executable,
                "-m",
                "mailflow",
                "web",
                "--listen",
                f"{HOST}:{{port}}",
                "--workers",
                str(args.workers),
            ],
            env,
            tmp / "web.log",
        )
        web.start()
        try:
            gets, posts, before = asyncio.run(
                asyncio.wait_for(mailflow_scenarios(web.port, cookie_name, fixture, n), timeout)
            )
        finally:
            web.stop()
        after = counts(fixture)
        web_log = web.log_tail()
        fixture.engine.dispose()

    print(
        f"requests:     {n} per scenario over {concurrency} keep-alive connections; "
        f"mailflow web --workers {args.workers}"
    )
    print()
    print(
        f"{'scenario':<16} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}"
    )
    for name, run in (("bare 200", base), ("GET /r/TOKEN", gets), ("POST /r/TOKEN", posts)):
        print(
            f"{name:<16} {run.requests:>8} {run.rate:>8.0f} {run.percentile(0.50):>8.2f} "
            f"{run.percentile(0.99):>8.2f} {run.rate / base.rate:>8.3f}"
        )
    print()

    posted = posts.statuses[303]
    gained = Counts(
        after.answers - before.answers,
        after.used_tokens - before.used_tokens,
        after.receipts - before.receipts,
    )
    problems = []
    for name, run in (("bare 200", base), ("GET", gets), ("POST", posts)):
        if run.requests != n or run.problems:
            problems.append(
                f"{name}: {run.requests} of {n} answered, statuses {dict(run.statuses)}, "
                f"{len(run.problems)} unexpected: {run.problems[:3]}"
            )
    if gained.answers != posted or posted != n or gained.used_tokens != n:
        problems.append(
            f"POST: {posted} answered 303, the database gained {gained.answers} answers and "
            f"{gained.used_tokens} used tokens (expected {n} each)"
        )
    if gained.receipts != 2 * n:
        problems.append(f"POST: {gained.receipts} receipts queued, expected {2 * n}")
    if web.returncode not in (0, -signal.SIGTERM):
        problems.append(f"mailflow web exited with {web.returncode}:\n{web_log}")
    if problems:
        for problem in problems:
            print(f"ERROR: {problem}", file=sys.stderr)
        return 1
    print(
        f"check:        bare 200s {base.statuses[200]}, GET pages with the form "
        f"{gets.statuses[200]}; POST 303s {posted}, the database gained {gained.answers} "
        f"answers, {gained.used_tokens} used tokens and {gained.receipts} receipts"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A scheduler pass over many open alerts: mailflow's chasing pass against
one raw SQL query selecting the same due (alert, organisation) rows.

PostgreSQL only.  For each size of ``--organisations`` it empties the
scratch database given (TRUNCATE of every mailflow table) and builds, with
COPY (not the ORM):

* N organisations, each with one administrator who was sent every alert
  (a delivery per alert and person), and one auditor;
* ``--alerts`` open high-severity alerts to all N (alerts x N
  ``alert_audience`` rows).  At the time the pass runs as (a Tuesday,
  10:00 in London), ``--reminder-alerts`` have their 24-hour reminder due,
  ``--overdue-alerts`` have just passed their deadline, and the rest are
  not yet due a reminder;
* an answer (``alert_statuses``) from every organisation but a fraction
  ``--unanswered`` of them, to every alert: only those few are due a
  chaser.  (The statuses share one ``answers`` row: nothing the pass reads
  looks at it.)

Then, in the same run and on the same data: the raw query (once to warm
the cache, then the best of three), a dry run of the pass under
tracemalloc (same statements, rolled back) for its peak Python memory,
and the real pass, timed.  It checks that the pass chased exactly the rows
the raw query found and exits 1 if not.

    .venv/bin/python bench/scheduler.py --database-url postgresql+psycopg://postgres@127.0.0.1/scratch
    .venv/bin/python bench/scheduler.py --database-url URL --organisations 2000 --alerts 20
    .venv/bin/python bench/scheduler.py --database-url URL --organisations 20000 --profile
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text

from bench.common import ALERT, SECRET_KEY, configure_logging, make_parser
from mailflow.config import load_settings
from mailflow.core.models import Base, ChaseKind, Chaser, ChaserEmail
from mailflow.core.runtime import Runtime
from mailflow.db import migrate
from mailflow.db.engine import make_engine
from mailflow.workers.periodic import TASKS, run_pass

# A Tuesday, 10:00 in London (GMT): working hours, so reminders go out.
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")
REMINDER_DUE_DEADLINE = NOW + timedelta(hours=20)  # the 24-hour point passed
NOT_DUE_DEADLINE = NOW + timedelta(hours=40)  # no reminder point yet
OVERDUE_DEADLINE = NOW - timedelta(hours=1)  # escalation due

# The due rows, as one query: open alerts whose 24-hour reminder point or
# deadline has passed, their open organisations with no answer and not
# yet chased (the raw equivalent of what the pass inserts as chasers).
RAW_DUE = text(
    """
    SELECT aa.alert_id, aa.organisation_id
    FROM alerts a
    JOIN alert_audience aa ON aa.alert_id = a.id
    JOIN organisations o ON o.id = aa.organisation_id
    WHERE a.response_required AND a.closed_at IS NULL
      AND a.deadline_at - interval '24 hours' <= :now
      AND o.closed_on IS NULL
      AND NOT EXISTS (SELECT 1 FROM alert_statuses s
                      WHERE s.alert_id = aa.alert_id AND s.organisation_id = aa.organisation_id)
      AND NOT EXISTS (SELECT 1 FROM chasers c
                      WHERE c.alert_id = aa.alert_id AND c.organisation_id = aa.organisation_id)
    """
)


@dataclass(frozen=True)
class Shape:
    organisations: int
    alerts: int
    reminder_alerts: int
    overdue_alerts: int
    unanswered: float

    def deadline(self, alert: int) -> datetime:
        if alert < self.reminder_alerts:
            return REMINDER_DUE_DEADLINE
        if alert < self.reminder_alerts + self.overdue_alerts:
            return OVERDUE_DEADLINE
        return NOT_DUE_DEADLINE

    def answered(self, alert: int, org: int) -> bool:
        # Spread the unanswered evenly, and differently for each alert.
        every = max(1, round(1 / self.unanswered)) if self.unanswered > 0 else 0
        return every == 0 or (org + alert) % every != 0


# ------------------------------------------------------------------ building


def naive(moment: datetime) -> datetime:
    """As mailflow stores times: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def finish_copied_build(engine: Engine) -> None:
    """After COPY: move each id sequence past the ids written by hand, so
    the pass's own inserts get fresh ones, and give the planner the
    statistics of the data just loaded."""
    with engine.begin() as conn:
        for table in ("organisations", "users", "memberships", "alerts", "deliveries", "answers"):
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def copy_rows(
    engine: Engine, table: str, columns: Iterable[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
    finally:
        connection.close()


def build(engine: Engine, shape: Shape) -> None:
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    at = naive(NOW - timedelta(days=1))
    n, a = shape.organisations, shape.alerts
    copy_rows(
        engine,
        "organisations",
        ("id", "code", "name", "type", "created_at", "updated_at"),
        ((o, f"B{o:06d}", f"Organisation {o}", "trust", at, at) for o in range(1, n + 1)),
    )
    # User o administers organisation o; user n + 1 is the auditor.
    copy_rows(
        engine,
        "users",
        ("id", "email", "name", "active", "created_at", "national_role"),
        [
            *(
                (u, f"admin{u}@bench.example", f"Admin {u}", True, at, None)
                for u in range(1, n + 1)
            ),
            (n + 1, "auditor@bench.example", "Auditor", True, at, "auditor"),
        ],
    )
    copy_rows(
        engine,
        "memberships",
        ("id", "user_id", "organisation_id", "role", "created_at"),
        ((o, o, o, "administrator", at) for o in range(1, n + 1)),
    )
    copy_rows(engine, "alerts", ALERT_COLUMNS, (alert_row(i, shape, at) for i in range(a)))
    copy_rows(
        engine,
        "alert_audience",
        ("alert_id", "organisation_id"),
        ((i + 1, o) for i in range(a) for o in range(1, n + 1)),
    )
    copy_rows(engine, "deliveries", DELIVERY_COLUMNS, deliveries(n, a, at))
    copy_rows(
        engine,
        "answers",
        (
            "id",
            "alert_id",
            "organisation_id",
            "user_id",
            "status",
            "via",
            "recorded_at",
            "within_deadline",
        ),
        [(1, 1, 1, 1, "complete", "link", at, True)],
    )
    copy_rows(
        engine,
        "alert_statuses",
        (
            "alert_id",
            "organisation_id",
            "answer_id",
            "status",
            "first_answered_at",
            "updated_at",
            "within_deadline",
        ),
        (
            (i + 1, o, 1, "complete", at, at, True)
            for i in range(a)
            for o in range(1, n + 1)
            if shape.answered(i, o)
        ),
    )
    finish_copied_build(engine)


ALERT_COLUMNS = (
    "id", "reference", "title", "severity", "summary", "affected", "cves", "remediation",
    '"references"', "response_required", "issued_at", "deadline_at", "issued_by",
    "audience_spec", "round",
)  # fmt: skip


def alert_row(i: int, shape: Shape, at: datetime) -> tuple[Any, ...]:
    deadline = shape.deadline(i)
    return (
        i + 1, f"BENCH-{i + 1}", ALERT["title"], "high", ALERT["summary"], "[]", "[]",
        ALERT["remediation"], "[]", True, naive(deadline - timedelta(hours=48)), naive(deadline),
        "bench", '{"all": true}', 1,
    )  # fmt: skip


DELIVERY_COLUMNS = (
    "alert_id", "user_id", "state", "attempts", "message_id", "reply_key", "bounce_key",
    "next_attempt_at", "sent_at", "created_at", "updated_at",
)  # fmt: skip


def deliveries(n: int, a: int, at: datetime) -> Iterator[tuple[Any, ...]]:
    for i in range(1, a + 1):
        for u in range(1, n + 1):
            key = f"{i}.{u}"
            yield (i, u, "sent", 1, f"<{key}@bench>", f"r{key}", f"b{key}", at, at, at, at)


# ----------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Result:
    organisations: int
    pairs: int
    due: int
    raw_seconds: float
    pass_seconds: float
    peak_bytes: int
    chased: int
    emails: int
    build_seconds: float


def time_raw(engine: Engine) -> tuple[float, int]:
    """The best of three, after one to warm the cache."""
    best, rows = float("inf"), 0
    for attempt in range(4):
        with engine.connect() as conn:
            started = time.perf_counter()
            rows = len(conn.execute(RAW_DUE, {"now": naive(NOW)}).all())
            took = time.perf_counter() - started
        if attempt:
            best = min(best, took)
    return best, rows


def forget_chasing(engine: Engine) -> None:
    """Back to the state before the pass, keeping what was built."""
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE chaser_emails, chasers, jobs")


def measure(url: str, shape: Shape, *, reuse: bool, profile: bool, top: int) -> Result:
    engine = make_engine(url)
    started = time.perf_counter()
    if reuse:
        forget_chasing(engine)
    else:
        build(engine, shape)
    build_seconds = time.perf_counter() - started
    raw_seconds, due = time_raw(engine)
    runtime = Runtime(
        load_settings(environ={}, overrides={"database_url": url, "secret_key": SECRET_KEY})
    )
    try:
        tracemalloc.start()
        would = run_pass(runtime, NOW, CHASING, dry_run=True)
        _size, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        done = run_pass(runtime, NOW, CHASING)
        pass_seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
            print(out.getvalue())
    finally:
        runtime.close()
    if would != done:
        print(f"the dry run said {would}, the pass did {done}", file=sys.stderr)
    with engine.connect() as conn:
        chased = conn.scalar(
            select(func.count())
            .select_from(Chaser)
            .where(
                Chaser.kind.in_((ChaseKind.REMINDER, ChaseKind.OVERDUE)),
                Chaser.organisation_id.is_not(None),
            )
        )
        emails = conn.scalar(select(func.count()).select_from(ChaserEmail))
    engine.dispose()
    return Result(
        organisations=shape.organisations,
        pairs=shape.organisations * shape.alerts,
        due=due,
        raw_seconds=raw_seconds,
        pass_seconds=pass_seconds,
        peak_bytes=peak,
        chased=int(chased or 0),
        emails=int(emails or 0),
        build_seconds=build_seconds,
    )


def report(result: Result) -> None:
    ratio = result.pass_seconds / result.raw_seconds
    print(
        f"{result.organisations:>7,} organisations, {result.pairs:>10,} pairs "
        f"(built in {result.build_seconds:.0f}s): {result.due:,} due; "
        f"raw query {result.raw_seconds * 1000:.0f} ms, pass {result.pass_seconds * 1000:.0f} ms "
        f"(ratio {ratio:.2f}, target <= 2); peak Python memory of the pass "
        f"{result.peak_bytes / 1024:.0f} KiB; {result.chased:,} chasers, {result.emails:,} emails"
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--database-url", required=True, help="a scratch PostgreSQL database")
    parser.add_argument(
        "--organisations", type=int, nargs="+", default=[5_000, 20_000], help="sizes to run"
    )
    parser.add_argument("--alerts", type=int, default=100)
    parser.add_argument("--reminder-alerts", type=int, default=10)
    parser.add_argument("--overdue-alerts", type=int, default=10)
    parser.add_argument("--unanswered", type=float, default=0.01)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the data of the last run (one size, the same flags): only forget its chasing",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the pass")
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args(argv)
    configure_logging()
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL database")
    migrate.upgrade(make_engine(args.database_url))
    failed = False
    for organisations in args.organisations:
        shape = Shape(
            organisations, args.alerts, args.reminder_alerts, args.overdue_alerts, args.unanswered
        )
        result = measure(
            args.database_url, shape, reuse=args.reuse, profile=args.profile, top=args.profile_top
        )
        report(result)
        if result.chased != result.due:
            print(f"the pass chased {result.chased} rows, the raw query found {result.due}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The auditors' figures over many alerts: ``alert_figures`` for one alert
and for every alert, beside one raw GROUP BY over ``alert_statuses``, and
the CSV of one alert streamed with its peak Python memory.

PostgreSQL only.  It empties the scratch database given (TRUNCATE of every
mailflow table) and builds, with COPY (not the ORM):

* ``--organisations`` organisations, each with one administrator;
* ``--alerts`` alerts to all of them, issued three days before the time
  the figures are taken as at (a Tuesday, 10:00 in London), due a day
  before it; plus one more alert to the first tenth of the organisations
  only, so the CSV is streamed at two sizes from the same build (it counts
  among "every alert");
* per alert, an answer from every organisation but a fraction
  ``--unanswered``; a fraction ``--twice`` of those answered twice (first
  "in progress", then their current status), so the figures have a
  history to search; ``alert_statuses`` points at the latest answer;
* a delivery of every alert to every administrator, bounced for one
  organisation in ``--bounce-every`` (those that did not answer are
  "unreachable").

Then, in the same run and on the same data (each timing the best of
``--repeats`` after one to warm the cache): the raw GROUP BY of
``alert_statuses`` by alert and status (all alerts, and one alert),
``alert_figures`` for one alert, and ``alerts_figures`` for every alert (the all-alerts
summary), with the ratios (target <= 2); then the CSV of the large alert
and of the small one written to /dev/null, timed, and again under
tracemalloc for the peak.  It checks the figures against the raw counts
and the unreachable against the build, and exits 1 if one disagrees.

    .venv/bin/python bench/report.py --database-url postgresql+psycopg://postgres@127.0.0.1/scratch
    .venv/bin/python bench/report.py --database-url URL --organisations 2000 --alerts 20
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench.common import ALERT, configure_logging, make_parser
from bench.scheduler import ALERT_COLUMNS, copy_rows, finish_copied_build, naive
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import Base
from mailflow.db import migrate
from mailflow.db.engine import make_engine
from mailflow.reports.csv_export import CsvWriter
from mailflow.reports.figures import AlertFigures, alert_figures, alert_rows, alerts_figures

# A Tuesday, 10:00 in London (GMT).
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/London")
ISSUED = NOW - timedelta(hours=72)
DEADLINE = ISSUED + timedelta(hours=48)
# Before the last answers (the second ones come up to 66 hours in).
PAST = ISSUED + timedelta(hours=62)
# The current statuses, spread over 20 slots: 2 unable, 2 not applicable,
# 4 in progress, the rest complete.
STATUS_SLOTS = (
    [AnswerStatus.UNABLE] * 2 + [AnswerStatus.NOT_APPLICABLE] * 2 + [AnswerStatus.IN_PROGRESS] * 4
)
STATUS_SLOTS += [AnswerStatus.COMPLETE] * (20 - len(STATUS_SLOTS))
OWING = (AnswerStatus.IN_PROGRESS, AnswerStatus.UNABLE)

# Counts by alert and status: what a hand-written report would run.
RAW_ALL = text("SELECT alert_id, status, count(*) FROM alert_statuses GROUP BY alert_id, status")
# The same over the history of answers (every answer, not only the
# latest): the table the figures as at a past time are counted from.
HISTORY_ALL = text("SELECT alert_id, status, count(*) FROM answers GROUP BY alert_id, status")
HISTORY_ONE = text(
    "SELECT alert_id, status, count(*) FROM answers "
    "WHERE alert_id = :alert GROUP BY alert_id, status"
)
RAW_ONE = text(
    "SELECT alert_id, status, count(*) FROM alert_statuses "
    "WHERE alert_id = :alert GROUP BY alert_id, status"
)

T = TypeVar("T")


@dataclass(frozen=True)
class Shape:
    organisations: int
    alerts: int
    unanswered: float
    twice: float
    bounce_every: int

    @property
    def small(self) -> int:
        """The organisations the extra alert went to."""
        return max(1, self.organisations // 10)

    def audience(self, alert: int) -> range:
        """Alerts are numbered from 1; the last goes to the small audience."""
        return range(1, (self.small if alert > self.alerts else self.organisations) + 1)

    def every_alert(self) -> range:
        return range(1, self.alerts + 2)

    def answered(self, alert: int, org: int) -> bool:
        every = max(1, round(1 / self.unanswered)) if self.unanswered > 0 else 0
        return every == 0 or (org + alert) % every != 0

    def answered_twice(self, alert: int, org: int) -> bool:
        every = max(1, round(1 / self.twice)) if self.twice > 0 else 0
        return every != 0 and (org * 3 + alert) % every == 0

    def bounced(self, org: int) -> bool:
        return org % self.bounce_every == 0

    def status(self, alert: int, org: int) -> AnswerStatus:
        return STATUS_SLOTS[(org * 7 + alert) % len(STATUS_SLOTS)]

    def first_answered_at(self, alert: int, org: int) -> datetime:
        # Over the first 60 hours: most within the 48-hour deadline.
        return ISSUED + timedelta(minutes=(org * 13 + alert * 29) % (60 * 60))


# ------------------------------------------------------------------ building


def answer_rows(shape: Shape) -> Iterator[tuple[Any, ...]]:
    """Answers, then (as a second pass of the same walk) the statuses that
    point at each pair's latest: the ids follow from the walk's order."""
    answer_id = 0
    for alert in shape.every_alert():
        for org in shape.audience(alert):
            if not shape.answered(alert, org):
                continue
            first = shape.first_answered_at(alert, org)
            answers = (
                [(AnswerStatus.IN_PROGRESS, first)] if shape.answered_twice(alert, org) else []
            )
            answers.append((shape.status(alert, org), first + timedelta(hours=6 * len(answers))))
            for status, at in answers:
                answer_id += 1
                yield (answer_id, alert, org, first, status, at)


def next_update_on(status: AnswerStatus, org: int) -> date | None:
    if status not in OWING:
        return None
    # A third of those owing an update are past its date.
    return NOW.date() + timedelta(days=-1 if org % 3 == 0 else 3)


def answers_table(shape: Shape) -> Iterator[tuple[Any, ...]]:
    for answer_id, alert, org, _first, status, at in answer_rows(shape):
        yield (
            answer_id, alert, org, org, status.value,
            "unable to patch the appliance" if status is AnswerStatus.UNABLE else None,
            "=risk accepted" if status is AnswerStatus.UNABLE else None,
            next_update_on(status, org), "link", naive(at), at <= DEADLINE,
        )  # fmt: skip


def statuses_table(shape: Shape) -> Iterator[tuple[Any, ...]]:
    latest: dict[tuple[int, int], tuple[Any, ...]] = {}
    previous: tuple[int, int] | None = None
    for answer_id, alert, org, first, status, at in answer_rows(shape):
        if previous is not None and previous != (alert, org):
            yield latest.pop(previous)
        previous = (alert, org)
        latest[previous] = (
            alert, org, answer_id, status.value, naive(first), naive(at), first <= DEADLINE,
            next_update_on(status, org), next_update_on(status, org),
        )  # fmt: skip
    yield from latest.values()


def deliveries(shape: Shape, at: datetime) -> Iterator[tuple[Any, ...]]:
    for alert in shape.every_alert():
        for user in shape.audience(alert):
            key = f"{alert}.{user}"
            state = "bounced" if shape.bounced(user) else "sent"
            yield (alert, user, state, 1, f"<{key}@bench>", f"r{key}", f"b{key}", at, at, at, at)


DELIVERY_COLUMNS = (
    "alert_id", "user_id", "state", "attempts", "message_id", "reply_key", "bounce_key",
    "next_attempt_at", "sent_at", "created_at", "updated_at",
)  # fmt: skip
ANSWER_COLUMNS = (
    "id", "alert_id", "organisation_id", "user_id", "status", "reason", "mitigations",
    "next_update_on", "via", "recorded_at", "within_deadline",
)  # fmt: skip
STATUS_COLUMNS = (
    "alert_id", "organisation_id", "answer_id", "status", "first_answered_at", "updated_at",
    "within_deadline", "update_due_on", "next_update_on",
)  # fmt: skip


def alert_row(alert: int) -> tuple[Any, ...]:
    return (
        alert, f"BENCH-{alert}", ALERT["title"], "high", ALERT["summary"], "[]", "[]",
        ALERT["remediation"], "[]", True, naive(ISSUED), naive(DEADLINE), "bench",
        '{"all": true}', 1,
    )  # fmt: skip


def build(engine: Engine, shape: Shape) -> None:
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    at = naive(ISSUED - timedelta(days=1))
    orgs = range(1, shape.organisations + 1)
    copy_rows(
        engine,
        "organisations",
        ("id", "code", "name", "type", "created_at", "updated_at"),
        ((o, f"B{o:06d}", f"Organisation {o}", "trust", at, at) for o in orgs),
    )
    copy_rows(
        engine,
        "users",
        ("id", "email", "name", "active", "created_at"),
        ((u, f"admin{u}@bench.example", f"Admin {u}", True, at) for u in orgs),
    )
    copy_rows(
        engine,
        "memberships",
        ("id", "user_id", "organisation_id", "role", "created_at"),
        ((o, o, o, "administrator", at) for o in orgs),
    )
    copy_rows(engine, "alerts", ALERT_COLUMNS, (alert_row(a) for a in shape.every_alert()))
    copy_rows(
        engine,
        "alert_audience",
        ("alert_id", "organisation_id"),
        ((a, o) for a in shape.every_alert() for o in shape.audience(a)),
    )
    copy_rows(engine, "deliveries", DELIVERY_COLUMNS, deliveries(shape, at))
    copy_rows(engine, "answers", ANSWER_COLUMNS, answers_table(shape))
    copy_rows(engine, "alert_statuses", STATUS_COLUMNS, statuses_table(shape))
    finish_copied_build(engine)


# ----------------------------------------------------------------- measuring


def best_of(repeats: int, work: Callable[[], T]) -> tuple[float, T]:
    """The best of ``repeats`` runs, after one to warm the cache."""
    best, result = float("inf"), work()
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def raw_counts(
    engine: Engine, alert: int | None, *, history: bool = False
) -> dict[tuple[int, str], int]:
    with engine.connect() as conn:
        if alert is None:
            rows = conn.execute(HISTORY_ALL if history else RAW_ALL).all()
        else:
            rows = conn.execute(HISTORY_ONE if history else RAW_ONE, {"alert": alert}).all()
    return {(row[0], row[1]): row[2] for row in rows}


def figures_of(engine: Engine, alerts: list[int], as_at: datetime = NOW) -> dict[int, AlertFigures]:
    """The figures of these alerts, as every report asks for them: one
    alert with ``alert_figures``, several with ``alerts_figures``."""
    with Session(engine) as session:
        if len(alerts) == 1:
            return {alerts[0]: alert_figures(session, alerts[0], as_at=as_at, zone=ZONE)}
        figures = alerts_figures(session, alerts, as_at=as_at, zone=ZONE)
        return dict(zip(alerts, figures, strict=True))


def stream_csv(engine: Engine, alert: int) -> int:
    """The alert's CSV to /dev/null, as ``mailflow report --format csv``
    writes it; returns the rows written."""
    written = 0

    def counted(rows: Iterable[Any]) -> Iterator[Any]:
        nonlocal written
        for row in rows:
            written += 1
            yield row

    with Session(engine) as session, open("/dev/null", "w", encoding="utf-8") as out:
        CsvWriter(out).write_rows(
            f"BENCH-{alert}", counted(alert_rows(session, alert, as_at=NOW, zone=ZONE))
        )
    return written


@dataclass(frozen=True)
class CsvRun:
    rows: int
    seconds: float
    peak_bytes: int


def measure_csv(engine: Engine, alert: int) -> CsvRun:
    seconds, rows = best_of(1, lambda: stream_csv(engine, alert))
    tracemalloc.start()
    stream_csv(engine, alert)
    _size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return CsvRun(rows, seconds, peak)


def disagreements(
    shape: Shape, figures: dict[int, AlertFigures], raw: dict[tuple[int, str], int]
) -> list[str]:
    """Where the figures differ from the raw counts or from the build."""
    wrong = []
    for alert, f in figures.items():
        by_status = {s: raw.get((alert, s.value), 0) for s in AnswerStatus}
        audience = shape.audience(alert)
        unanswered = [o for o in audience if not shape.answered(alert, o)]
        expected = {
            "in_scope": len(audience),
            "answered": sum(by_status.values()),
            "in_progress": by_status[AnswerStatus.IN_PROGRESS],
            "complete": by_status[AnswerStatus.COMPLETE],
            "not_applicable": by_status[AnswerStatus.NOT_APPLICABLE],
            "unable": by_status[AnswerStatus.UNABLE],
            "unreachable": sum(1 for o in unanswered if shape.bounced(o)),
            "no_answer": sum(1 for o in unanswered if not shape.bounced(o)),
        }
        for name, value in expected.items():
            if getattr(f, name) != value:
                wrong.append(f"BENCH-{alert} {name}: figures {getattr(f, name)}, expected {value}")
    return wrong


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def run(url: str, shape: Shape, repeats: int, *, reuse: bool = False) -> int:
    engine = make_engine(url)
    started = time.perf_counter()
    if not reuse:
        build(engine, shape)
    print(
        f"{shape.organisations:,} organisations x {shape.alerts:,} alerts "
        f"(+1 to {shape.small:,}): built in {time.perf_counter() - started:.0f}s"
    )
    with engine.connect() as conn:
        answers = conn.exec_driver_sql("SELECT count(*) FROM answers").scalar_one()
        statuses = conn.exec_driver_sql("SELECT count(*) FROM alert_statuses").scalar_one()
    print(f"  {answers:,} answers, {statuses:,} current statuses")
    alerts = list(shape.every_alert())
    raw_one_s, _ = best_of(repeats, lambda: raw_counts(engine, 1))
    raw_all_s, raw = best_of(repeats, lambda: raw_counts(engine, None))
    history_one_s, _ = best_of(repeats, lambda: raw_counts(engine, 1, history=True))
    history_all_s, _ = best_of(repeats, lambda: raw_counts(engine, None, history=True))
    one_s, _ = best_of(repeats, lambda: figures_of(engine, [1]))
    all_s, figures = best_of(repeats, lambda: figures_of(engine, alerts))
    print(f"  one alert:   raw GROUP BY {ms(raw_one_s)}, alert_figures {ms(one_s)} "
          f"(ratio {one_s / raw_one_s:.1f})")  # fmt: skip
    print(f"  all {len(alerts)} alerts: raw GROUP BY {ms(raw_all_s)}, alerts_figures "
          f"{ms(all_s)} (ratio {all_s / raw_all_s:.1f}, target <= 2)")  # fmt: skip
    # As at a past time some answers came after: counted from the history.
    past_s, _ = best_of(repeats, lambda: figures_of(engine, [1], PAST))
    print(f"  one alert as at {PAST - ISSUED} after issue (from the history): raw GROUP BY "
          f"of its answers {ms(history_one_s)}, alert_figures {ms(past_s)} (ratio "
          f"{past_s / history_one_s:.1f}); all answers GROUP BY {ms(history_all_s)}")  # fmt: skip
    for alert in (alerts[-1], 1):
        csv = measure_csv(engine, alert)
        print(f"  CSV of BENCH-{alert}: {csv.rows:,} rows in {ms(csv.seconds)}, "
              f"peak Python memory {csv.peak_bytes / 1024:,.0f} KiB")  # fmt: skip
    engine.dispose()
    wrong = disagreements(shape, figures, raw)
    for line in wrong[:20]:
        print(line, file=sys.stderr)
    return 1 if wrong else 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--database-url", required=True, help="a scratch PostgreSQL database")
    parser.add_argument("--organisations", type=int, default=20_000)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--unanswered", type=float, default=0.05)
    parser.add_argument("--twice", type=float, default=0.2, help="the share that answered twice")
    parser.add_argument("--bounce-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reuse", action="store_true", help="measure the data an earlier run of this shape built"
    )
    args = parser.parse_args(argv)
    configure_logging()
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL database")
    migrate.upgrade(make_engine(args.database_url))
    shape = Shape(args.organisations, args.alerts, args.unanswered, args.twice, args.bounce_every)
    return run(args.database_url, shape, args.repeats, reuse=args.reuse)


if __name__ == "__main__":
    sys.exit(main())

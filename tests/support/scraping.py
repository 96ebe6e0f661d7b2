"""Reading what an edge says about itself over HTTP, as Prometheus and a
load balancer do: /healthz, /readyz and /metrics, parsed with
prometheus_client's own parser.  And a database that a test can take
away from a running process, or make wait on a lock."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mailflow.db import migrate
from mailflow.db.engine import make_engine
from tests.support.databases import drop_postgres_database, fresh_postgres_database

# One sample: its name and its labels, sorted.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def get(port: int, path: str) -> tuple[int, str]:
    """The status and body of GET http://127.0.0.1:PORT/PATH."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> dict[SampleKey, float]:
    """Every sample /metrics shows, by name and labels."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[SampleKey, float], name: str, **labels: str) -> float:
    """A sample's value; 0 for a counter not yet counted."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass(frozen=True)
class Breakable:
    """A database of the test's own, and how to take it away."""

    url: str
    take_away: Callable[[], None]


def breakable_database(backend: str, template: Path | None, tmp_path: Path) -> Iterator[Breakable]:
    """A migrated database for one test.  SQLite: a file in a folder that
    is renamed away (the file is gone from where the settings say);
    PostgreSQL: a database dropped with its connections cut."""
    if backend == "sqlite":
        assert template is not None
        folder = tmp_path / "db"
        folder.mkdir()
        shutil.copy(template, folder / "mailflow.db")

        def rename_away() -> None:
            folder.rename(tmp_path / "db-gone")

        yield Breakable(f"sqlite:///{folder / 'mailflow.db'}", rename_away)
        return
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield Breakable(url, partial(drop_postgres_database, url))


@contextmanager
def table_locked(url: str, table: str) -> Iterator[Callable[[], int]]:
    """``table`` locked against reading until the block ends; yields how
    many other connections wait on a lock."""
    engine = make_engine(url)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

            def waiting() -> int:
                with engine.connect() as watcher:
                    return int(
                        watcher.exec_driver_sql(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        ).scalar_one()
                    )

            yield waiting
            holder.rollback()
    finally:
        engine.dispose()

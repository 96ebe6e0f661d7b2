"""Importing people in bulk: `mailflow users import FILE` of ``--people``
people (one role each, over ``--organisations`` organisations, a tenth of
them administrators, a tenth alert-only contacts), run as a person runs
it, in a process of its own, timed from start to exit, beside ``--sample``
runs of `mailflow users add` (one process a person, as before the import
existed), whose mean is scaled to the same number of people.

The import's phases are timed in this process too, on a second set of
people: reading and checking the file, and the import itself (lookups,
inserts and rendering the welcome emails) up to its commit.  It checks
that every person was added with one welcome email queued, and exits 1
if not.

Without ``--database-url`` it uses a fresh SQLite file in a temporary
directory.  With one, it migrates that database and names the people
and organisations under a random tag, so that reruns do not clash.

    .venv/bin/python bench/import_people.py                       # 5000 people
    .venv/bin/python bench/import_people.py --database-url postgresql+psycopg://postgres@127.0.0.1/scratch
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.common import SECRET_KEY, USER_DOMAIN, insert_organisations, make_parser
from mailflow.config import load_settings
from mailflow.core.models import OutgoingEmail, User
from mailflow.db.engine import make_engine
from mailflow.db.migrate import upgrade
from mailflow.people.people_files import read_people_file
from mailflow.people.people_import import import_people
from mailflow.people.welcome_email import WELCOME_KIND

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
ADD = ["users", "add", "--role", "responder"]


def role(i: int) -> str:
    return "administrator" if i % 10 == 0 else "alert-only" if i % 10 == 1 else "responder"


def write_file(path: Path, tag: str, people: int, codes: list[str], first: int = 0) -> str:
    """The people file; returns the domain every address in it ends in."""
    domain = f"{tag}.{USER_DOMAIN}"
    lines = ["email,name,org,role"]
    for i in range(first, first + people):
        lines.append(f"p{i}@{domain},Person {i},{codes[i % len(codes)]},{role(i)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return domain


def command_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    return env | {"MAILFLOW_DATABASE_URL": database_url, "MAILFLOW_SECRET_KEY": SECRET_KEY}


def run(arguments: list[str], env: dict[str, str]) -> float:
    """Seconds a `mailflow ARGUMENTS` process took, start to exit."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mailflow", *arguments], env=env, capture_output=True, check=False
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"mailflow {arguments[:2]} failed: {done.stderr.decode()}")
    return took


def counted(database_url: str, domain: str) -> tuple[int, int]:
    """People whose address ends in ``domain``, and their welcome emails."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            users = conn.scalar(select(func.count()).where(User.email.like(f"%@{domain}")))
            welcomes = conn.scalar(
                select(func.count()).where(
                    OutgoingEmail.kind == WELCOME_KIND, OutgoingEmail.recipient.like(f"%@{domain}")
                )
            )
        return int(users or 0), int(welcomes or 0)
    finally:
        engine.dispose()


def phases(database_url: str, path: Path) -> tuple[float, float]:
    """Seconds to read and check the file, and to import it (committed)."""
    settings = load_settings(
        environ={}, overrides={"database_url": database_url, "secret_key": SECRET_KEY}
    )
    engine = make_engine(database_url)
    try:
        start = time.perf_counter()
        people_file = read_people_file(path)
        read = time.perf_counter() - start
        start = time.perf_counter()
        with Session(engine) as session, session.begin():
            import_people(session, settings, people_file, now=NOW, actor="bench", source=path.name)
        return read, time.perf_counter() - start
    finally:
        engine.dispose()


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--organisations", type=int, default=500)
    parser.add_argument("--sample", type=int, default=10, help="`users add` runs to average")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mailflow-bench-") as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        tag = secrets.token_hex(3)
        codes = [f"B{tag.upper()}{i:03d}"[:10] for i in range(args.organisations)]
        with engine.begin() as conn:
            insert_organisations(
                conn, f"bench-{tag}", {c: f"Bench organisation {c}" for c in codes}, NOW
            )
        engine.dispose()
        env = command_env(url)

        add_domain = f"add.{tag}.{USER_DOMAIN}"
        adds = [
            run([*ADD, f"a{i}@{add_domain}", "--name", f"Added {i}", "--org", code], env)
            for i, code in enumerate(codes[: args.sample])
        ]
        per_add = sum(adds) / len(adds)

        whole = folder / "people.csv"
        domain = write_file(whole, f"cmd{tag}", args.people, codes)
        took = run(["users", "import", str(whole)], env)
        again = run(["users", "import", str(whole)], env)
        added, welcomes = counted(url, domain)

        inside = folder / "inside.csv"
        inside_domain = write_file(inside, f"in{tag}", args.people, codes)
        read, imported = phases(url, inside)
        inside_added, inside_welcomes = counted(url, inside_domain)

    print(f"database          {url.split(':')[0]}")
    print(f"people            {args.people} over {args.organisations} organisations")
    print(f"users add         {per_add:.2f} s a person (mean of {args.sample} processes)")
    print(f"  x {args.people:<15} {per_add * args.people:.0f} s")
    print(f"users import      {took:.2f} s (one process, start to exit)")
    print(f"  again           {again:.2f} s (every row unchanged)")
    print(f"  speed-up        {per_add * args.people / took:.0f}x")
    print(f"in process        read and check {read:.2f} s, import and commit {imported:.2f} s")
    ok = (added, welcomes, inside_added, inside_welcomes) == (args.people,) * 4
    if not ok:
        print(
            f"MISMATCH: {added} people, {welcomes} welcomes (command); "
            f"{inside_added}, {inside_welcomes} (in process); expected {args.people}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

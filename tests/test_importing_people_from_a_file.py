"""People in bulk: an administrator writes everyone into a CSV (email,
name, org, role) and runs `mailflow users import FILE`.  Everyone is
added and welcomed, or, if any row is wrong, every bad line is named and
nothing at all is imported.  Importing the same file again changes
nothing.  `users list` prints the people back as text, JSON or CSV."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.cli import people_listing
from mailflow.config import Settings
from mailflow.core.models import AuditEvent, Job, Membership, OutgoingEmail, User
from mailflow.core.runtime import Runtime
from mailflow.people import people_files, people_import
from mailflow.workers.queue import QueueWorker
from tests.support.cli import mailflow_with, one_error_line
from tests.support.mail import plain_text
from tests.support.relay import CapturingRelay
from tests.support.seed import ORGS_CSV

HEADER = "email,name,org,role\n"
GOOD = (
    HEADER
    + "ann@riverside.example,Ann Lee,RXA,administrator\n"
    + "raj@riverside.example,Raj Patel,rxa,responder\n"
    + "li@itservices.example,Li Chen,RXB,responder\n"
    + "li@itservices.example,Li Chen,RXC,responder\n"
    + "tom@castleton.example,Tom Wren,RXC,alert-only\n"
    + "ola@oversight.example,Ola Nwosu,,auditor\n"
)
GOOD_PEOPLE = {
    "ann@riverside.example": {("administrator", "RXA")},
    "raj@riverside.example": {("responder", "RXA")},
    "li@itservices.example": {("responder", "RXB"), ("responder", "RXC")},
    "tom@castleton.example": {("alert-only", "RXC")},
    "ola@oversight.example": {("auditor", "")},
}


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def orgs(settings: Settings, tmp_path: Path) -> Settings:
    """The four seed organisations, and one that has closed."""
    listed = tmp_path / "orgs.csv"
    listed.write_text(ORGS_CSV + "RXZ,Closed NHS Trust,trust\n", encoding="utf-8")
    assert mailflow_with(settings, "orgs", "import", str(listed)).exit_code == 0
    etr = tmp_path / "etr.csv"
    closed = ["RXZ", "CLOSED NHS TRUST", *[""] * 8, "19990401", "20200331"]
    etr.write_text(",".join(closed) + "\n", encoding="utf-8")
    assert mailflow_with(settings, "orgs", "import", str(etr)).exit_code == 0
    return settings


def people_file(tmp_path: Path, text: str, name: str = "people.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def import_file(settings: Settings, path: str) -> Result:
    return mailflow_with(settings, "users", "import", path)


def everything(engine: sa.Engine) -> tuple[int, ...]:
    """How many people, roles, audit events, emails and jobs there are."""
    with engine.connect() as conn:
        return tuple(
            int(conn.scalar(select(func.count()).select_from(model)) or 0)
            for model in (User, Membership, AuditEvent, OutgoingEmail, Job)
        )


def people_and_roles(engine: sa.Engine) -> dict[str, set[tuple[str, str]]]:
    """Each active person's roles, as (role, organisation code or "")."""
    with Session(engine) as session:
        people: dict[str, set[tuple[str, str]]] = {}
        for user in session.scalars(select(User).where(User.active.is_(True))):
            roles = {(str(m.role), m.organisation.code) for m in user.memberships}
            if user.national_role:
                roles.add((str(user.national_role), ""))
            people[user.email] = roles
        return people


def error_lines(result: Result) -> list[str]:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith("mailflow: ") for line in lines), result.stderr
    return [line.removeprefix("mailflow: ") for line in lines]


# ------------------------------------------------------------ a good file


@pytest.fixture
def worker(orgs: Settings) -> Iterator[QueueWorker]:
    runtime = Runtime(orgs)
    running = QueueWorker(runtime, poll_seconds=0.05)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        runtime.close()


def test_everyone_in_a_good_file_is_added_and_welcomed_through_the_relay(
    orgs: Settings,
    engine: sa.Engine,
    tmp_path: Path,
    relay: CapturingRelay,
    worker: QueueWorker,
) -> None:
    result = import_file(orgs, people_file(tmp_path, GOOD))

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "6 rows read: 5 people added, 0 roles given to people already here, 0 unchanged\n"
    )
    assert result.stderr == "5 welcome emails queued\n"
    assert people_and_roles(engine) == GOOD_PEOPLE
    # One welcome a person, however many roles they were given.
    sent = relay.wait_for(5)
    assert sorted(r for m in sent for r in m.recipients) == sorted(GOOD_PEOPLE)
    by_recipient = {m.recipients[0]: m.message for m in sent}
    li = plain_text(by_recipient["li@itservices.example"])
    assert "Brookfield Community NHS Trust (RXB), Castleton Mental Health" in li
    assert "/enrol/" in li
    assert "/enrol/" not in plain_text(by_recipient["tom@castleton.example"])
    assert str(by_recipient["ann@riverside.example"]["Subject"]) == (
        "Welcome to Cyber alerts: set up your authenticator app"
    )


def test_importing_the_same_file_again_changes_nothing_and_sends_nothing(
    orgs: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    path = people_file(tmp_path, GOOD)
    assert import_file(orgs, path).exit_code == 0
    before = everything(engine)

    again = import_file(orgs, path)

    assert again.exit_code == 0, again.output
    assert again.stdout == (
        "6 rows read: 0 people added, 0 roles given to people already here, 6 unchanged\n"
    )
    assert again.stderr == "0 welcome emails queued\n"
    # Only the import itself is logged.
    assert everything(engine) == (before[0], before[1], before[2] + 1, before[3], before[4])


def test_people_already_here_are_given_new_roles_and_welcomed_only_if_never_sent_a_link(
    orgs: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    assert import_file(orgs, people_file(tmp_path, GOOD)).exit_code == 0
    emails_before = everything(engine)[3]
    more = (
        HEADER
        + "raj@riverside.example,Raj Patel,RXD,responder\n"
        + "tom@castleton.example,Someone Else Entirely,RXC,alert-only\n"
        + "tom@castleton.example,Tom Wren,,auditor\n"
        + "new@dunmore.example,New Person,RXD,responder\n"
    )

    result = import_file(orgs, people_file(tmp_path, more, "more.csv"))

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "4 rows read: 1 person added, 2 roles given to people already here, 1 unchanged\n"
    )
    people = people_and_roles(engine)
    assert people["raj@riverside.example"] == {("responder", "RXA"), ("responder", "RXD")}
    assert people["tom@castleton.example"] == {("alert-only", "RXC"), ("auditor", "")}
    # The new person is welcomed; so is Tom, who held only alert-only
    # roles, so was never sent a link to set up an app, and now needs one
    # as an auditor.  Raj already had his link: no second welcome.
    assert everything(engine)[3] == emails_before + 2
    with Session(engine) as session:
        # A file does not rename anyone.
        tom = session.scalars(select(User).where(User.email == "tom@castleton.example")).one()
        assert tom.name == "Tom Wren"
        welcomes = session.scalars(
            select(OutgoingEmail)
            .where(OutgoingEmail.recipient == "tom@castleton.example")
            .order_by(OutgoingEmail.id)
        ).all()
        assert len(welcomes) == 2
        assert b"/enrol/" not in welcomes[0].raw and b"/enrol/" in welcomes[1].raw


def test_a_file_is_looked_up_and_welcomed_in_slices_without_losing_anyone(
    orgs: Settings, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slices of two: five people, four organisations, three slices each.
    monkeypatch.setattr(people_import, "LOOKUP_SLICE", 2)
    path = people_file(tmp_path, GOOD)

    first = import_file(orgs, path)
    again = import_file(orgs, path)

    assert first.stderr == "5 welcome emails queued\n"
    assert people_and_roles(engine) == GOOD_PEOPLE
    with Session(engine) as session:
        welcomed = session.scalars(
            select(OutgoingEmail.recipient).where(OutgoingEmail.kind == "welcome")
        )
        assert sorted(welcomed) == sorted(GOOD_PEOPLE)
    assert again.stdout.endswith(
        "0 people added, 0 roles given to people already here, 6 unchanged\n"
    )


# ------------------------------------------------------------ bad files


def test_bad_rows_import_nothing_and_every_bad_line_is_named(
    orgs: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    assert import_file(orgs, people_file(tmp_path, GOOD)).exit_code == 0
    assert mailflow_with(orgs, "users", "remove", "raj@riverside.example").exit_code == 0
    before = everything(engine)
    bad = (
        HEADER
        + "good@dunmore.example,Good Person,RXD,responder\n"  # 2: fine
        + "not-an-address,Nobody,RXA,responder\n"  # 3
        + "x@dunmore.example,X,RXD,boss\n"  # 4
        + "y@dunmore.example,Y,NOPE1,responder\n"  # 5
        + "z@dunmore.example,Z,RXZ,responder\n"  # 6: closed
        + "ann@riverside.example,Ann Lee,RXA,responder\n"  # 7: holds another role
        + "raj@riverside.example,Raj Patel,RXA,responder\n"  # 8: removed
        + "good@dunmore.example,Good Person,RXD,responder\n"  # 9: repeats line 2
        + "good@dunmore.example,Other Name,RXA,responder\n"  # 10: a second name
        + "w@dunmore.example,W,RXD,responder,extra\n"  # 11
        + "a@dunmore.example,A,RXA,auditor\n"  # 12: auditors are national
        + "b@dunmore.example,,RXA,responder\n"  # 13: no name
    )

    result = import_file(orgs, people_file(tmp_path, bad))

    lines = error_lines(result)
    assert [line.split(":")[0] for line in lines[:-1]] == [
        f"people.csv line {n}" for n in range(3, 14)
    ]
    assert "'not-an-address' is not a valid address" in lines[0]
    assert "'boss' is not a role" in lines[1]
    assert "NOPE1 is not a known organisation" in lines[2]
    assert "RXZ (CLOSED NHS TRUST) is closed" in lines[3]
    assert "already administrator at RXA" in lines[4]
    assert "raj@riverside.example was removed" in lines[5]
    assert "already on line 2" in lines[6]
    assert "named 'Good Person' on line 2" in lines[7]
    assert "expected 4 fields, found 5" in lines[8]
    assert "auditors are national" in lines[9]
    assert "give a name" in lines[10]
    assert lines[-1] == "people.csv: 11 bad rows: nothing was written"
    assert everything(engine) == before


def test_people_added_while_the_import_ran_stop_it_and_nothing_is_written(
    orgs: Settings, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = mailflow_with(
        orgs, "users", "add", "raj@riverside.example", "--name", "Raj", "--org", "RXA",
        "--role", "responder",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    before = everything(engine)
    # As if Raj were added just after the import looked for him.
    monkeypatch.setattr(people_import, "_known_people", lambda session, emails: {})

    result = import_file(orgs, people_file(tmp_path, GOOD))

    assert one_error_line(result) == (
        "people.csv: some of these people were added meanwhile: run it again (nothing was written)"
    )
    assert everything(engine) == before


def test_only_the_first_bad_rows_are_listed_and_all_are_counted(
    orgs: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    rows = "".join(f"p{n}@dunmore.example,P {n},RXD,chief\n" for n in range(30))

    lines = error_lines(import_file(orgs, people_file(tmp_path, HEADER + rows)))

    shown = people_files.MAX_PROBLEMS
    assert len(lines) == shown + 1
    assert lines[0].startswith("people.csv line 2: 'chief' is not a role")
    assert lines[shown - 1].startswith(f"people.csv line {shown + 1}:")
    assert lines[-1] == (
        f"people.csv: 30 bad rows (the first {shown} are shown): nothing was written"
    )
    assert everything(engine)[:2] == (0, 0)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "people.csv: the file is empty (it needs the header email,name,org,role)"),
        (b"email,name,org\na@b.example,A,RXA\n", "missing column 'role'"),
        (b"email,name,org,role,phone\n", "unknown column 'phone'"),
        (b"email,name,org,role,role\n", "a column is named twice"),
        (b"email,name,org,role\n", "people.csv: the file has a header but no people"),
        (b"email,name,org,role\n\xff\xfe,A,RXA,responder\n", "not UTF-8 text"),
        (b'email,name,org,role\n"a@b.example,A,RXA,responder\n', "not valid CSV"),
        (b'email,name,org,role\na@b.example,"A"B,RXA,responder\n', "not valid CSV"),
    ],
)
def test_a_file_that_is_not_a_people_list_is_refused_clearly(
    orgs: Settings, engine: sa.Engine, tmp_path: Path, content: bytes, error: str
) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(content)
    before = everything(engine)

    line = one_error_line(import_file(orgs, str(path)))

    assert error in line and line.endswith("(nothing was written)")
    assert everything(engine) == before


def test_a_file_too_long_or_with_too_many_rows_is_refused(
    orgs: Settings, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "".join(f"p{n}@dunmore.example,P {n},RXD,responder\n" for n in range(40))
    path = people_file(tmp_path, HEADER + rows)
    monkeypatch.setattr(people_files, "MAX_ROWS", 30)
    assert "more than 30 rows: split the file" in one_error_line(import_file(orgs, path))
    monkeypatch.setattr(people_files, "MAX_FILE_BYTES", 1024)
    assert "longer than 1 KiB" in one_error_line(import_file(orgs, path))
    assert everything(engine)[:2] == (0, 0)


def test_a_name_that_looks_like_a_formula_is_kept_and_listed_safely_as_csv(
    orgs: Settings, tmp_path: Path
) -> None:
    formula = '=HYPERLINK("http://evil.example","click")'
    quoted = formula.replace('"', '""')
    text = HEADER + f'eve@riverside.example,"{quoted}",RXA,responder\n'
    assert import_file(orgs, people_file(tmp_path, text)).exit_code == 0

    listed = mailflow_with(orgs, "users", "list", "--csv")
    as_json = mailflow_with(orgs, "users", "list", "--json")

    [row] = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert row["name"] == "'" + formula
    assert json.loads(as_json.stdout)[0]["name"] == formula


def test_what_users_list_prints_as_csv_imports_as_it_is(orgs: Settings, tmp_path: Path) -> None:
    """An administrator lists everyone as CSV, edits it in a spreadsheet and
    imports it elsewhere: the listing's extra columns are read and ignored,
    and a name it quoted to keep a spreadsheet from running it comes back
    as it was."""
    formula = "=SUM(A1:A2)"
    text = GOOD + f"eve@riverside.example,{formula},RXA,responder\n"
    assert import_file(orgs, people_file(tmp_path, text)).exit_code == 0
    listed = mailflow_with(orgs, "users", "list", "--csv").stdout

    read_back = people_files.parse_people(listed, source="listed.csv")
    again = import_file(orgs, people_file(tmp_path, listed, "listed.csv"))

    assert not read_back.problems.found
    wanted = {(e, r, o or "") for e, roles in GOOD_PEOPLE.items() for r, o in roles}
    assert {(row.email, row.role, row.org_code or "") for row in read_back.rows} == wanted | {
        ("eve@riverside.example", "responder", "RXA")
    }
    assert {row.name for row in read_back.rows if row.email.startswith("eve@")} == {formula}
    assert again.exit_code == 0, again.output
    assert "7 unchanged" in again.stdout


# ------------------------------------------------------------ listing


def test_one_organisations_people_are_listed_as_json_and_as_csv(
    orgs: Settings, tmp_path: Path
) -> None:
    assert import_file(orgs, people_file(tmp_path, GOOD)).exit_code == 0

    as_json = mailflow_with(orgs, "users", "list", "--org", "rxc", "--json")
    as_csv = mailflow_with(orgs, "users", "list", "--org", "RXC", "--csv")

    assert as_json.exit_code == 0 and as_csv.exit_code == 0, as_json.output + as_csv.output
    people = json.loads(as_json.stdout)
    assert [p["email"] for p in people] == ["li@itservices.example", "tom@castleton.example"]
    assert people[0]["roles"] == [
        {"org": "RXB", "role": "responder"},
        {"org": "RXC", "role": "responder"},
    ]
    assert people[1]["welcome_bounced"] is None
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["email"], r["org"], r["role"]) for r in rows] == [
        ("li@itservices.example", "RXB", "responder"),
        ("li@itservices.example", "RXC", "responder"),
        ("tom@castleton.example", "RXC", "alert-only"),
    ]


def test_everyone_is_listed_page_by_page_without_an_org(
    orgs: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert import_file(orgs, people_file(tmp_path, GOOD)).exit_code == 0
    # Pages of two: five people take three pages, and none is lost or repeated.
    monkeypatch.setattr("mailflow.people.users.USERS_PAGE", 2)

    as_json = json.loads(mailflow_with(orgs, "users", "list", "--json").stdout)
    as_text = mailflow_with(orgs, "users", "list").stdout.splitlines()
    as_csv = list(csv.DictReader(io.StringIO(mailflow_with(orgs, "users", "list", "--csv").stdout)))

    assert [p["email"] for p in as_json] == sorted(GOOD_PEOPLE)
    assert [line.split()[0] for line in as_text] == sorted(GOOD_PEOPLE)
    assert len(as_csv) == 6
    assert {(r["email"], r["role"], r["org"]) for r in as_csv} == {
        (email, role, org) for email, roles in GOOD_PEOPLE.items() for role, org in roles
    }


@pytest.mark.backends("sqlite")
def test_a_listing_read_slowly_never_holds_up_a_writer(
    orgs: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`users list | less`: while the listing waits on its reader, the
    inbound server, the web page and the worker must still be able to
    write (on SQLite a write transaction would lock them all out)."""
    assert import_file(orgs, people_file(tmp_path, GOOD)).exit_code == 0
    database = orgs.database_url.removeprefix("sqlite:///")
    writes: list[str] = []
    real_write_json = people_listing.write_json

    def slow_reader(pages: Iterable[people_listing.Page], out: TextIO) -> None:
        # With a page read, another process takes the write lock at once or
        # gives up (half a second, not SQLite's usual 30).
        pages = iter(pages)
        first = next(pages)
        writer = sqlite3.connect(database, timeout=0.5, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("COMMIT")
            writes.append("written")
        except sqlite3.OperationalError as exc:
            writes.append(str(exc))
        finally:
            writer.close()
        real_write_json(itertools.chain([first], pages), out)

    monkeypatch.setattr(people_listing, "write_json", slow_reader)
    listed = mailflow_with(orgs, "users", "list", "--json")

    assert listed.exit_code == 0, listed.output
    assert writes == ["written"]
    assert len(json.loads(listed.stdout)) == len(GOOD_PEOPLE)


def test_listing_as_json_and_csv_at_once_is_refused(orgs: Settings) -> None:
    result = mailflow_with(orgs, "users", "list", "--json", "--csv")
    assert one_error_line(result) == "give --json or --csv, not both"
    assert result.exit_code == 1


@pytest.mark.parametrize("output", [[], ["--json"], ["--csv"]], ids=["text", "json", "csv"])
def test_listing_an_unknown_organisation_prints_only_the_error(
    orgs: Settings, output: list[str]
) -> None:
    result = mailflow_with(orgs, "users", "list", "--org", "NOPE9", *output)
    assert one_error_line(result) == (
        "org: 'NOPE9' is not a known organisation (nothing was written)"
    )


def test_an_empty_list_is_still_valid_json_and_csv(orgs: Settings) -> None:
    assert json.loads(mailflow_with(orgs, "users", "list", "--json").stdout) == []
    assert mailflow_with(orgs, "users", "list", "--csv").stdout.splitlines() == [
        "email,name,org,role,digest,welcome_bounced_at,welcome_bounce"
    ]

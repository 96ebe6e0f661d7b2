"""Organisations: an administrator loads the list of organisations the
service covers, from a CSV of their own or an NHS ODS extract, and reloads
it when organisations are renamed or close."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.core.errors import InvalidInput
from mailflow.core.models import AuditEvent, Organisation
from mailflow.people.organisation_files import read_organisation_file
from mailflow.people.organisations import import_organisations

PROJECT = Path(__file__).resolve().parent.parent
DEMO_ORGS = PROJECT / "demo" / "orgs.csv"
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def mailflow(database_url: str, *args: str) -> Result:
    env = {"MAILFLOW_DATABASE_URL": database_url, "MAILFLOW_SECRET_KEY": "x" * 40}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ods_row(code: str, name: str, opened: str = "19990401", closed: str = "") -> str:
    """A row as NHS Digital publishes it: 27 quoted fields, no header."""
    cells = [
        code,
        name,
        "Y60",
        "QHM",
        "MAIN HOSPITAL",
        "HOSPITAL ROAD",
        "",
        "NORTHTOWN",
        "",
        "NT1 2AB",
        opened,
        closed,
        "",
        "",
        "",
        "",
        "",
        "01234 567890",
        "",
        "",
        "",
        "0",
        "",
        "",
        "",
        "",
        "",
    ]
    assert len(cells) == 27
    return ",".join(f'"{cell}"' for cell in cells)


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\r\n" for line in lines), encoding="utf-8")
    return path


def count(engine: sa.Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def organisations(engine: sa.Engine) -> dict[str, Organisation]:
    with Session(engine) as session:
        return {o.code: o for o in session.scalars(select(Organisation))}


def parents(engine: sa.Engine) -> dict[str, str | None]:
    with Session(engine) as session:
        return {
            o.code: (o.parent.code if o.parent else None)
            for o in session.scalars(select(Organisation))
        }


def audit_actions(engine: sa.Engine) -> list[tuple[str, str, dict[str, object]]]:
    with Session(engine) as session:
        return [
            (e.action, e.subject, e.details)
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]


# ------------------------------------------------------------ our own CSV


def test_importing_our_csv_creates_organisations_and_links_parents(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    orgs_file = write(
        tmp_path / "orgs.csv",
        "code,name,type,parent",
        "RXA,Riverside Acute NHS Trust,trust,QAB",  # parent comes later in the file
        "RXB,Brookfield Community NHS Trust,Trust,qab",
        "QAB,Northmoor Integrated Care Board,icb,",
    )

    result = mailflow(database_url, "orgs", "import", str(orgs_file))

    assert result.exit_code == 0, result.output
    assert result.stdout == ("3 organisations read: 3 new, 0 updated, 0 closed, 0 unchanged\n")
    found = organisations(engine)
    assert {code: (o.name, o.type) for code, o in found.items()} == {
        "RXA": ("Riverside Acute NHS Trust", "trust"),
        "RXB": ("Brookfield Community NHS Trust", "trust"),
        "QAB": ("Northmoor Integrated Care Board", "icb"),
    }
    assert all(o.closed_on is None for o in found.values())
    assert parents(engine) == {"RXA": "QAB", "RXB": "QAB", "QAB": None}


def test_an_import_is_recorded_in_the_audit_log(database_url: str, engine: sa.Engine) -> None:
    result = mailflow(database_url, "orgs", "import", str(DEMO_ORGS))

    assert result.exit_code == 0, result.output
    events = [e for e in audit_actions(engine) if e[0] == "organisations.imported"]
    assert len(events) == 1
    _, subject, details = events[0]
    assert subject == "file:orgs.csv"
    assert details == {"created": 4, "updated": 0, "closed": 0}


def test_the_listing_shows_what_was_imported(database_url: str) -> None:
    mailflow(database_url, "orgs", "import", str(DEMO_ORGS))

    result = mailflow(database_url, "orgs", "list")

    assert result.exit_code == 0, result.output
    codes = [line.split()[0] for line in result.stdout.splitlines()]
    assert codes == ["QAB", "RXA", "RXB", "RXC"]


# ---------------------------------------------------------- NHS ODS files


def test_an_etr_extract_imports_trusts_with_their_open_and_close_dates(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    etr = write(
        tmp_path / "etr.csv",
        ods_row("RXA", "RIVERSIDE ACUTE NHS TRUST", opened="20010401"),
        ods_row("RXB", "BROOKFIELD COMMUNITY NHS TRUST", opened="19940401"),
        ods_row("RXD", "DALESIDE NHS TRUST", opened="19920401", closed="20190331"),
    )

    result = mailflow(database_url, "orgs", "import", str(etr))

    assert result.exit_code == 0, result.output
    assert "3 organisations read: 3 new" in result.stdout
    found = organisations(engine)
    assert {o.type for o in found.values()} == {"trust"}
    assert found["RXA"].name == "RIVERSIDE ACUTE NHS TRUST"
    assert found["RXA"].opened_on == date(2001, 4, 1)
    assert found["RXA"].closed_on is None
    assert found["RXD"].closed_on == date(2019, 3, 31)
    assert not found["RXD"].is_open

    listed = mailflow(database_url, "orgs", "list").stdout
    assert "RXD" not in listed
    assert "closed 2019-03-31" in mailflow(database_url, "orgs", "list", "--all").stdout


def test_an_eccg_extract_imports_integrated_care_boards(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    eccg = write(
        tmp_path / "eccg.csv",
        ods_row("QAB", "NHS NORTHMOOR INTEGRATED CARE BOARD", opened="20220701"),
        ods_row("QAC", "NHS SOUTHMOOR INTEGRATED CARE BOARD", opened="20220701"),
    )

    result = mailflow(database_url, "orgs", "import", str(eccg))

    assert result.exit_code == 0, result.output
    assert {code: o.type for code, o in organisations(engine).items()} == {
        "QAB": "icb",
        "QAC": "icb",
    }


def test_an_ods_extract_under_another_name_needs_a_type(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    extract = write(
        tmp_path / "trusts-2026.csv",
        ods_row("RXA", "RIVERSIDE ACUTE NHS TRUST"),
    )

    refused = mailflow(database_url, "orgs", "import", str(extract))

    assert refused.exit_code != 0
    assert "trusts-2026.csv" in refused.stderr
    assert "--type" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert count(engine, Organisation) == 0

    accepted = mailflow(database_url, "orgs", "import", str(extract), "--type", "trust")

    assert accepted.exit_code == 0, accepted.output
    assert organisations(engine)["RXA"].type == "trust"


def test_reimporting_renames_and_closes_organisations_and_counts_each_change(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    write(
        tmp_path / "etr.csv",
        ods_row("RXA", "RIVERSIDE ACUTE NHS TRUST", opened="20010401"),
        ods_row("RXB", "BROOKFIELD COMMUNITY NHS TRUST", opened="19940401"),
        ods_row("RXC", "CASTLETON NHS TRUST", opened="19940401"),
    )
    mailflow(database_url, "orgs", "import", str(tmp_path / "etr.csv"))
    write(
        tmp_path / "etr.csv",
        ods_row("RXA", "RIVERSIDE UNIVERSITY HOSPITALS NHS TRUST", opened="20010401"),
        ods_row("RXB", "BROOKFIELD COMMUNITY NHS TRUST", opened="19940401", closed="20260930"),
        ods_row("RXC", "CASTLETON NHS TRUST", opened="19940401"),
        ods_row("RXE", "EASTBROOK NHS TRUST", opened="20261001"),
    )

    result = mailflow(database_url, "orgs", "import", str(tmp_path / "etr.csv"))

    assert result.exit_code == 0, result.output
    assert result.stdout == ("4 organisations read: 1 new, 1 updated, 1 closed, 1 unchanged\n")
    found = organisations(engine)
    assert found["RXA"].name == "RIVERSIDE UNIVERSITY HOSPITALS NHS TRUST"
    assert found["RXB"].closed_on == date(2026, 9, 30)
    assert found["RXE"].opened_on == date(2026, 10, 1)
    assert len(found) == 4

    events = audit_actions(engine)
    updates = {
        subject: details for action, subject, details in events if action == "organisation.updated"
    }
    assert updates["organisation:RXA"]["changes"] == {
        "name": ["RIVERSIDE ACUTE NHS TRUST", "RIVERSIDE UNIVERSITY HOSPITALS NHS TRUST"]
    }
    assert updates["organisation:RXB"]["changes"] == {"closed_on": [None, "2026-09-30"]}
    assert set(updates) == {"organisation:RXA", "organisation:RXB"}
    imports = [details for action, _, details in events if action == "organisations.imported"]
    assert imports[-1] == {"created": 1, "updated": 1, "closed": 1}


def test_moving_an_organisation_to_another_parent_is_counted_and_audited(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    # import_organisations says it updates "name, type, parent, dates", and
    # the audit log promises a row for every state change.
    orgs_file = write(
        tmp_path / "orgs.csv",
        "code,name,type,parent",
        "QAB,Northmoor Integrated Care Board,icb,",
        "QAC,Southmoor Integrated Care Board,icb,",
        "RXA,Riverside Acute NHS Trust,trust,QAB",
    )
    mailflow(database_url, "orgs", "import", str(orgs_file))
    write(
        orgs_file,
        "code,name,type,parent",
        "QAB,Northmoor Integrated Care Board,icb,",
        "QAC,Southmoor Integrated Care Board,icb,",
        "RXA,Riverside Acute NHS Trust,trust,QAC",
    )

    result = mailflow(database_url, "orgs", "import", str(orgs_file))

    assert result.exit_code == 0, result.output
    assert parents(engine)["RXA"] == "QAC"
    assert "1 updated" in result.stdout
    assert any(
        action == "organisation.updated" and subject == "organisation:RXA"
        for action, subject, _ in audit_actions(engine)
    )


# ------------------------------------------------------------- bad files

BAD_FILES = {
    "bad code": (
        "orgs.csv",
        b"code,name,type\r\nRXA,Riverside Acute NHS Trust,trust\r\nR!B,Brookfield,trust\r\n",
        ["orgs.csv line 3", "'R!B'"],
    ),
    "empty name": (
        "orgs.csv",
        b"code,name,type\r\nRXA,Riverside Acute NHS Trust,trust\r\nRXB,  ,trust\r\n",
        ["orgs.csv line 3", "name is empty"],
    ),
    "bad date": (
        "etr.csv",
        (
            ods_row("RXA", "RIVERSIDE ACUTE NHS TRUST")
            + "\r\n"
            + ods_row("RXB", "BROOKFIELD NHS TRUST", closed="20261345")
            + "\r\n"
        ).encode(),
        ["etr.csv line 2", "'20261345'", "column 12"],
    ),
    "wrong column count": (
        "orgs.csv",
        b"code,name,type,parent\r\nRXA,Riverside Acute NHS Trust,trust,,\r\n",
        ["orgs.csv line 2", "expected 4 fields, found 5"],
    ),
    "too few ODS columns": (
        "etr.csv",
        b'"RXA","RIVERSIDE ACUTE NHS TRUST","Y60","QHM","20010401"\r\n',
        ["etr.csv line 1", "at least 12 fields, found 5"],
    ),
    "duplicate code": (
        "orgs.csv",
        b"code,name,type\r\nRXA,Riverside,trust\r\nRXB,Brookfield,trust\r\nrxa,Again,trust\r\n",
        ["orgs.csv line 4", "already appears on line 2"],
    ),
    "unknown parent": (
        "orgs.csv",
        b"code,name,type,parent\r\nRXA,Riverside,trust,\r\nRXB,Brookfield,trust,QZZ\r\n",
        ["orgs.csv line 3", "QZZ"],
    ),
    "not UTF-8": (
        "orgs.csv",
        b"code,name,type\r\nRXA,Ysbyty Gwynedd \xff,trust\r\n",
        ["orgs.csv", "not UTF-8"],
    ),
    "empty file": ("orgs.csv", b"", ["orgs.csv", "no organisations"]),
    "unknown header column": (
        "orgs.csv",
        b"code,name,type,region\r\nRXA,Riverside,trust,North\r\n",
        ["orgs.csv line 1", "'region'"],
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_file_is_refused_naming_the_line_and_nothing_is_written(
    case: str, database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    mailflow(database_url, "orgs", "import", str(DEMO_ORGS))
    before = (count(engine, Organisation), count(engine, AuditEvent))
    name, content, expected = BAD_FILES[case]
    bad = tmp_path / name
    bad.write_bytes(content)

    result = mailflow(database_url, "orgs", "import", str(bad))

    assert result.exit_code == 1
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr
    assert "nothing was written" in result.stderr
    assert (count(engine, Organisation), count(engine, AuditEvent)) == before
    assert organisations(engine)["RXA"].name == "Riverside Acute NHS Trust"


def test_a_bad_row_leaves_earlier_good_rows_unimported(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    mailflow(database_url, "orgs", "import", str(DEMO_ORGS))
    bad = write(
        tmp_path / "orgs.csv",
        "code,name,type",
        "RXA,Riverside University Hospitals NHS Trust,trust",
        "RXF,Fenside NHS Trust,trust",
        "RXG,,trust",
    )

    result = mailflow(database_url, "orgs", "import", str(bad))

    assert result.exit_code == 1
    assert "orgs.csv line 4" in result.stderr
    found = organisations(engine)
    assert "RXF" not in found
    assert found["RXA"].name == "Riverside Acute NHS Trust"


def test_a_file_with_only_a_header_is_refused(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    # An empty file is refused ("the file has no organisations in it"); a
    # header with no rows under it is just as empty.
    header_only = write(tmp_path / "orgs.csv", "code,name,type,parent")

    result = mailflow(database_url, "orgs", "import", str(header_only))

    assert result.exit_code == 1
    assert "no organisations" in result.stderr
    assert count(engine, AuditEvent) == 0


def test_line_numbers_count_lines_of_the_file_not_csv_records(
    database_url: str, tmp_path: Path
) -> None:
    orgs_file = write(
        tmp_path / "orgs.csv",
        "code,name,type",
        'RXA,"Riverside Acute NHS Trust',
        '(Riverside General Hospital)",trust',
        "R!B,Brookfield,trust",
    )

    result = mailflow(database_url, "orgs", "import", str(orgs_file))

    assert result.exit_code == 1
    assert "orgs.csv line 4:" in result.stderr


# ------------------------------------------------------ the domain directly


def test_the_domain_imports_a_file_and_resolves_parents(session: Session, tmp_path: Path) -> None:
    orgs_file = write(
        tmp_path / "orgs.csv",
        "code,name,type,parent",
        "QAB,Northmoor Integrated Care Board,icb,",
        "RXA,Riverside Acute NHS Trust,trust,QAB",
    )

    records = read_organisation_file(orgs_file)
    summary = import_organisations(
        session, records, now=NOW, actor="test:admin", source=orgs_file.name
    )
    session.commit()

    assert (summary.created, summary.updated, summary.closed, summary.unchanged) == (2, 0, 0, 0)
    rxa = session.scalar(select(Organisation).where(Organisation.code == "RXA"))
    assert rxa is not None and rxa.parent is not None
    assert rxa.parent.code == "QAB"
    assert rxa.created_at == NOW
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "organisations.imported"))
    assert event is not None
    assert (event.actor, event.subject, event.at) == ("test:admin", "file:orgs.csv", NOW)


def test_the_domain_refuses_an_unknown_parent_before_writing(
    session: Session, tmp_path: Path
) -> None:
    orgs_file = write(
        tmp_path / "orgs.csv",
        "code,name,type,parent",
        "RXA,Riverside Acute NHS Trust,trust,",
        "RXB,Brookfield Community NHS Trust,trust,RXZ",
    )
    records = read_organisation_file(orgs_file)

    with pytest.raises(InvalidInput) as caught:
        import_organisations(session, records, now=NOW, actor="test:admin", source="orgs.csv")

    assert caught.value.where == "orgs.csv line 3"
    assert "RXZ" in caught.value.problem
    assert len(session.new) == 0
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Organisation)) == 0


def test_the_domain_refuses_an_organisation_that_is_its_own_parent(
    session: Session, tmp_path: Path
) -> None:
    orgs_file = write(tmp_path / "orgs.csv", "code,name,type,parent", "RXA,Riverside,trust,rxa")
    records = read_organisation_file(orgs_file)

    with pytest.raises(InvalidInput) as caught:
        import_organisations(session, records, now=NOW, actor="t", source="orgs.csv")

    assert caught.value.where == "orgs.csv line 2"
    assert "own parent" in caught.value.problem


def test_a_type_given_for_the_whole_file_wins_over_the_type_column(tmp_path: Path) -> None:
    orgs_file = write(
        tmp_path / "orgs.csv", "code,name,type", "RXA,Riverside,trust", "QAB,Northmoor,icb"
    )

    records = read_organisation_file(orgs_file, "hospital")

    assert [(r.code, r.type, r.line) for r in records] == [
        ("RXA", "hospital", 2),
        ("QAB", "hospital", 3),
    ]


def test_one_organisation_is_counted_as_one(database_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    csv.write_text("code,name,type\nRXA,Riverside Acute NHS Trust,trust\n", encoding="utf-8")

    result = mailflow(database_url, "orgs", "import", str(csv))

    assert result.exit_code == 0, result.output
    assert result.stdout == "1 organisation read: 1 new, 0 updated, 0 closed, 0 unchanged\n"

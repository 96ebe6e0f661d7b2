"""A publisher follows an alert sent to hundreds of organisations: `alert
show` and `alert status` print the counts and the first few, `--all`
every one, `--unanswered` only those yet to answer, and `--csv` the whole
list for a spreadsheet; `alert issue` names a few of the organisations it
found no one to email at, and says how many in all."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import Alert
from tests.support.alert_lifecycle import answer
from tests.support.cli import mailflow_with, one_error_line
from tests.support.seed import NOW, alert_spec_data

ORGANISATIONS = 300
WITH_PEOPLE = 20
CODES = [f"ORG{n:03d}" for n in range(1, ORGANISATIONS + 1)]
REFERENCE = "CC-4720"


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@dataclass(frozen=True)
class BigAlert:
    settings: Settings
    issued: Result


@pytest.fixture
def big_alert(settings: Settings, session: Session, tmp_path: Path) -> BigAlert:
    """300 organisations, a responder at each of the first 20, the alert
    issued to all, and three answers: two complete, one in progress."""
    orgs = tmp_path / "orgs.csv"
    orgs.write_text(
        "code,name,type\n" + "".join(f"{c},Trust {c},trust\n" for c in CODES), encoding="utf-8"
    )
    assert mailflow_with(settings, "orgs", "import", str(orgs)).exit_code == 0
    people = tmp_path / "people.csv"
    people.write_text(
        "email,name,org,role\n"
        + "".join(f"r{n}@trust.example,Responder {n},{CODES[n]},responder\n" for n in range(20)),
        encoding="utf-8",
    )
    assert mailflow_with(settings, "users", "import", str(people)).exit_code == 0
    spec = tmp_path / "alert.json"
    spec.write_text(json.dumps(alert_spec_data(audience={"types": ["trust"]})), encoding="utf-8")
    issued = mailflow_with(settings, "alert", "issue", str(spec))
    assert issued.exit_code == 0, issued.output

    alert_id = session.scalars(select(Alert.id).where(Alert.reference == REFERENCE)).one()
    answer(session, alert_id, "r0@trust.example", "ORG001", NOW)
    answer(session, alert_id, "r1@trust.example", "ORG002", NOW)
    answer(session, alert_id, "r2@trust.example", "ORG003", NOW, AnswerStatus.IN_PROGRESS)
    return BigAlert(settings, issued)


def run(big: BigAlert, *args: str) -> Result:
    result = mailflow_with(big.settings, "alert", *args)
    assert result.exit_code == 0, result.output
    return result


def lines_of_organisations(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("ORG")]


def test_issuing_names_a_few_organisations_with_no_one_to_email_and_counts_them_all(
    big_alert: BigAlert,
) -> None:
    warning = next(
        line for line in big_alert.issued.stderr.splitlines() if line.startswith("warning:")
    )
    assert warning == (
        "warning: no one to email at 280 organisations: "
        "ORG021, ORG022, ORG023, ORG024, ORG025 and 275 more"
    )


def test_show_summarises_the_audience_and_the_emails(big_alert: BigAlert) -> None:
    shown = run(big_alert, "show", REFERENCE).stdout

    assert (
        "audience  300 organisations: ORG001, ORG002, ORG003, ORG004, ORG005, ORG006, ORG007, "
        "ORG008, ORG009, ORG010 and 290 more (--all to list them, --csv for a spreadsheet)"
    ) in shown
    assert "ORG011" not in shown
    assert "emails    20 queued" in shown
    rows = [line for line in shown.splitlines() if "@trust.example" in line]
    assert len(rows) == 10
    assert shown.rstrip().endswith(
        "... and 10 more emails (--all to list them, --csv for a spreadsheet)"
    )


def test_show_all_lists_every_organisation_and_email(big_alert: BigAlert) -> None:
    shown = run(big_alert, "show", REFERENCE, "--all").stdout

    audience = next(line for line in shown.splitlines() if line.startswith("audience"))
    assert audience.split(": ", 1)[1].split(", ") == CODES
    assert len([line for line in shown.splitlines() if "@trust.example" in line]) == 20
    assert "more" not in shown


def test_show_as_csv_is_every_email_with_a_header(big_alert: BigAlert) -> None:
    rows = list(csv.DictReader(io.StringIO(run(big_alert, "show", REFERENCE, "--csv").stdout)))

    assert len(rows) == 20
    assert {r["recipient"] for r in rows} == {f"r{n}@trust.example" for n in range(20)}
    assert {r["organisations"] for r in rows} == set(CODES[:20])
    assert {r["state"] for r in rows} == {"queued"}


def test_status_summarises_with_counts_and_the_first_organisations(big_alert: BigAlert) -> None:
    status = run(big_alert, "status", REFERENCE)

    assert "answered  3 of 300 organisations" in status.stdout
    assert "statuses  297 no answer, 2 complete, 1 in progress" in status.stdout
    assert [line.split()[0] for line in lines_of_organisations(status)] == CODES[:10]
    assert status.stdout.rstrip().endswith(
        "... and 290 more organisations (--all to list them, --csv for a spreadsheet)"
    )


def test_status_all_lists_every_organisation(big_alert: BigAlert) -> None:
    status = run(big_alert, "status", REFERENCE, "--all")

    assert [line.split()[0] for line in lines_of_organisations(status)] == CODES
    assert "more organisations" not in status.stdout


def test_status_unanswered_lists_only_those_with_no_answer(big_alert: BigAlert) -> None:
    summary = run(big_alert, "status", REFERENCE, "--unanswered")
    every = run(big_alert, "status", REFERENCE, "--unanswered", "--all")
    as_json = json.loads(run(big_alert, "status", REFERENCE, "--unanswered", "--json").stdout)

    # The counts are still of the whole audience.
    assert "answered  3 of 300 organisations" in summary.stdout
    assert [line.split()[0] for line in lines_of_organisations(summary)] == CODES[3:13]
    assert "... and 287 more organisations" in summary.stdout
    listed = lines_of_organisations(every)
    assert [line.split()[0] for line in listed] == CODES[3:]
    assert all(line.split()[1:] == ["no", "answer"] for line in listed)
    assert [o["organisation"] for o in as_json["organisations"]] == CODES[3:]


def test_status_as_csv_is_every_organisation_with_a_header(big_alert: BigAlert) -> None:
    rows = list(csv.DictReader(io.StringIO(run(big_alert, "status", REFERENCE, "--csv").stdout)))
    unanswered = list(
        csv.DictReader(
            io.StringIO(run(big_alert, "status", REFERENCE, "--csv", "--unanswered").stdout)
        )
    )

    assert [r["organisation"] for r in rows] == CODES
    assert [(r["status"], r["answered_by"]) for r in rows[:3]] == [
        ("complete", "r0@trust.example"),
        ("complete", "r1@trust.example"),
        ("in_progress", "r2@trust.example"),
    ]
    assert rows[0]["within_deadline"] == "yes" and rows[3]["overdue"] == "no"
    assert [r["organisation"] for r in unanswered] == CODES[3:]
    assert {r["status"] for r in unanswered} == {""}


def test_json_and_csv_at_once_are_refused(big_alert: BigAlert) -> None:
    for command in ("show", "status"):
        result = mailflow_with(big_alert.settings, "alert", command, REFERENCE, "--json", "--csv")
        assert one_error_line(result) == "give --json or --csv, not both"

"""An auditor opens the report link from a digest: nothing is shown until
they give their second factor, and then only to their browser; the
figures are those every report computes, the table of organisations
filters, sorts, pages and goes back in time, the CSV is safe for a
spreadsheet, and looking never changes the database."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.core.links import PEOPLE_LINK
from mailflow.core.models import Alert, MfaFailure, Organisation, User
from mailflow.reports import report_downloads, report_pages, report_query
from mailflow.reports.csv_export import HEADER
from mailflow.reports.figures import alert_figures
from mailflow.reports.reported_alerts import alerts_in_report
from tests.support.pages import csrf_of, user_id
from tests.support.report_pages import (
    BO,
    OLA,
    RAJ,
    UNA,
    ReportWeb,
    codes_listed,
    database_contents,
    figures_shown,
)
from tests.support.reporting import EARLIER, INJECTION, LONDON, SATURDAY, hours
from tests.support.seed import NOW, alert_spec_data

REFERENCE = "CC-4720"
NONE = ["RXG", "RXH", "RXJ"]  # no answer
ALL_CODES = ["RXA", "RXB", "RXC", "RXD", "RXE", "RXF", "RXG", "RXH", "RXJ"]


def reference(report_web: ReportWeb) -> str:
    return report_web.db().get_one(Alert, report_web.alert_id).reference


# ------------------------------------------------------------ refusing


def test_without_a_second_factor_every_page_asks_for_the_code_and_shows_no_figures(
    report_web: ReportWeb,
) -> None:
    path = report_web.link(OLA)
    ref = reference(report_web)

    for page in (path, f"{path}/alerts/{ref}", f"{path}/alerts/{ref}?status=unable"):
        shown = report_web.browser().get(page)
        assert shown.status_code == 200
        assert 'name="code"' in shown.text
        assert "Confirm it is you" in shown.text
        assert "data-name" not in shown.text
        assert "RXA" not in shown.text and "Vendor has no fix" not in shown.text


def test_a_wrong_code_shows_the_form_again_and_counts_towards_the_lock_out(
    report_web: ReportWeb,
) -> None:
    client, path = report_web.browser(), report_web.link(OLA)
    right = report_web.code(OLA)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    refused = report_web.confirm(client, path, wrong)

    assert refused.status_code == 400
    assert "That code is not right" in refused.text
    assert "data-name" not in refused.text
    failures = select(func.count()).select_from(MfaFailure)
    assert (
        report_web.db().scalar(failures.where(MfaFailure.user_id == user_id(report_web.db(), OLA)))
        == 1
    )
    assert "data-name" not in client.get(path).text


def test_an_empty_code_is_asked_for(report_web: ReportWeb) -> None:
    refused = report_web.confirm(report_web.browser(), report_web.link(OLA), "")

    assert refused.status_code == 400
    assert "Enter the code from your authenticator app" in refused.text


def test_another_auditors_verified_browser_is_asked_for_this_auditors_code(
    report_web: ReportWeb,
) -> None:
    client, _ = report_web.verified_browser(BO)
    ola_link = report_web.link(OLA)

    shown = client.get(ola_link)
    assert shown.status_code == 200
    assert 'id="someone-else"' in shown.text
    assert "data-name" not in shown.text
    # Bo's own code does not open Ola's report.
    refused = report_web.confirm(client, ola_link, report_web.code(BO))
    assert refused.status_code == 400
    assert "data-name" not in refused.text
    assert client.get(f"{ola_link}/alerts.csv").status_code == 403

    opened = report_web.confirm(client, ola_link, report_web.code(OLA))
    assert opened.status_code == 200
    assert figures_shown(opened.text, reference(report_web))["in_scope"] == "9"


@pytest.mark.parametrize("who", ["responder", "removed auditor", "auditor no more"])
def test_a_report_link_for_anyone_but_an_active_auditor_is_refused(
    report_web: ReportWeb, who: str
) -> None:
    email = RAJ if who == "responder" else OLA
    path = report_web.link(email)
    # Ola's browser had given her code before she stopped being an auditor.
    client = report_web.verified_browser(OLA)[0] if email == OLA else report_web.browser()
    session = report_web.db()
    if who == "removed auditor":
        session.execute(update(User).where(User.email == OLA).values(active=False))
    elif who == "auditor no more":
        session.execute(update(User).where(User.email == OLA).values(national_role=None))
    session.commit()

    shown = client.get(path)
    assert shown.status_code == 403
    assert "only for the auditors" in shown.text
    assert 'name="code"' not in shown.text and "data-name" not in shown.text
    # A right code, posted with the form's token from another page, is no use.
    csrf = csrf_of(client.get(report_web.link(BO)).text)
    posted = client.post(path, data={"csrf_token": csrf, "code": report_web.code(email)})
    assert posted.status_code == 403
    assert "only for the auditors" in posted.text


def test_an_auditor_without_an_authenticator_app_is_told_how_to_set_one_up(
    report_web: ReportWeb,
) -> None:
    shown = report_web.browser().get(report_web.link(UNA))

    assert shown.status_code == 403
    assert "Set up your authenticator app first" in shown.text
    assert "welcome email" in shown.text
    assert report_web.settings.help_email in shown.text
    assert "data-name" not in shown.text


def tampered(report_web: ReportWeb) -> str:
    path = report_web.link(OLA)
    return path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")


def expired(report_web: ReportWeb) -> str:
    return report_web.link(OLA, at=SATURDAY - timedelta(days=8, minutes=1))


def other_purpose(report_web: ReportWeb) -> str:
    payload = {"u": user_id(report_web.db(), OLA), "o": 1}
    return "/report/" + PEOPLE_LINK.tokens(report_web.settings).sign(payload, SATURDAY)


@pytest.mark.parametrize(
    ("make", "status_code", "title"),
    [
        (tampered, 400, "This link is not valid"),
        (expired, 410, "This link has expired"),
        (other_purpose, 400, "This link is not valid"),
    ],
)
def test_a_tampered_expired_or_other_kind_of_link_is_refused(
    report_web: ReportWeb, make: object, status_code: int, title: str
) -> None:
    assert callable(make)
    path = make(report_web)
    client, _ = report_web.verified_browser(OLA)

    for page in (path, f"{path}/alerts/{reference(report_web)}", f"{path}/alerts.csv"):
        shown = client.get(page)
        assert shown.status_code == status_code
        assert title in shown.text
        assert "data-name" not in shown.text


# ------------------------------------------------------------- showing


def test_the_report_shows_each_figure_as_alert_figures_counts_it(report_web: ReportWeb) -> None:
    client, path = report_web.verified_browser(OLA)
    ref = reference(report_web)

    page = client.get(path)

    assert page.status_code == 200
    expected = alert_figures(
        report_web.db(), report_web.alert_id, as_at=report_web.clock.now, zone=LONDON
    )
    shown = figures_shown(page.text, ref)
    for name, value in asdict(expected).items():
        times = (
            "issued_at",
            "deadline_at",
            "closed_at",
            "as_at",
            "round_started_at",
            "last_answer_at",
        )
        if name in ("reference", "title", *times):
            continue
        if isinstance(value, timedelta):
            assert shown[name] == str(int(value.total_seconds())), name
        else:
            assert shown[name] == str(value), name
    # The numbers themselves, as tests/test_reporting_an_alert.py knows them.
    assert (shown["in_scope"], shown["answered"], shown["answered_within_deadline"]) == (
        "9",
        "6",
        "5",
    )
    assert (shown["no_answer"], shown["unreachable"], shown["overdue_updates"]) == ("2", "1", "1")
    assert shown["median_to_first_answer"] == str(10 * 3600)
    assert "6 (67%)" in page.text
    assert f'href="{path}/alerts/{ref}"' in page.text


def test_as_at_an_earlier_time_the_report_shows_the_figures_then(report_web: ReportWeb) -> None:
    client, path = report_web.verified_browser(OLA)
    ref = reference(report_web)
    # Wednesday 2 December 15:00 in London (GMT), as a browser's field sends it.
    page = client.get(path, params={"as_at": f"{EARLIER:%Y-%m-%dT%H:%M}"})

    assert page.status_code == 200
    shown = figures_shown(page.text, ref)
    assert (shown["answered"], shown["in_progress"], shown["no_answer"]) == ("4", "2", "4")
    assert "Wednesday 2 December 2026 at 15:00 GMT" in page.text
    # The links on the page keep the time.
    assert f"/alerts/{ref}?as_at=2026-12-02T15%3A00%3A00%2B00%3A00" in page.text


def test_the_table_lists_every_organisation_with_what_it_answered(report_web: ReportWeb) -> None:
    client, path = report_web.verified_browser(OLA)

    page = client.get(f"{path}/alerts/{reference(report_web)}")

    assert page.status_code == 200
    assert codes_listed(page.text) == ALL_CODES
    assert "Reason: Vendor has no fix" in page.text
    assert "Mitigations: Port closed" in page.text
    assert "li@itservices.example" in page.text
    assert "Unreachable (every email bounced)" in page.text
    # The note is shown as text, never as markup.
    assert "Note: =cmd|&#39; /C calc&#39;!A0" in page.text
    assert '<time datetime="2026-12-16">Wednesday 16 December 2026</time>' in page.text


def test_the_type_filter_offers_only_the_types_the_alert_went_to(report_web: ReportWeb) -> None:
    session = report_web.db()
    # An ambulance service the alert did not go to.
    session.add(
        Organisation(code="RYA", name="Ambulance", type="ambulance", created_at=NOW, updated_at=NOW)
    )
    session.commit()
    client, path = report_web.verified_browser(OLA)

    page = client.get(f"{path}/alerts/{reference(report_web)}")

    offered = re.findall(
        r'<option value="([^"]*)"', page.text.split('id="type"')[1].split("</select>")[0]
    )
    assert offered[-2:] == ["practice", "trust"]
    assert "ambulance" not in offered


@pytest.mark.parametrize(
    ("query", "codes"),
    [
        ("status=no_answer", ["RXH", "RXJ"]),
        ("status=unreachable", ["RXG"]),
        ("status=complete", ["RXA", "RXE", "RXF"]),
        # After the deadline the silent are overdue, and RXB's update is.
        ("overdue=1", ["RXB", "RXG", "RXH", "RXJ"]),
        ("type=practice", ["RXJ"]),
        ("parent=rxa", ["RXE", "RXJ"]),
        ("parent=RXA&status=complete", ["RXE"]),
        (
            "sort=answered_at&desc=1",
            ["RXE", "RXD", "RXF", "RXC", "RXB", "RXA", "RXG", "RXH", "RXJ"],
        ),
        ("sort=code&desc=1", list(reversed(ALL_CODES))),
        ("sort=next_update_on", ["RXB", "RXC", "RXA", "RXD", "RXE", "RXF", *NONE]),
    ],
)
def test_the_table_filters_and_sorts(report_web: ReportWeb, query: str, codes: list[str]) -> None:
    client, path = report_web.verified_browser(OLA)

    page = client.get(f"{path}/alerts/{reference(report_web)}?{query}")

    assert page.status_code == 200
    assert codes_listed(page.text) == codes


def test_a_sorted_column_links_to_the_other_way_round_keeping_the_filters(
    report_web: ReportWeb,
) -> None:
    client, path = report_web.verified_browser(OLA)

    page = client.get(f"{path}/alerts/{reference(report_web)}?status=complete&sort=name")

    assert 'aria-sort="ascending"><a href="?status=complete&amp;sort=name&amp;desc=1">' in page.text
    assert 'href="?status=complete&amp;sort=status">Status</a>' in page.text


def test_the_table_pages_its_rows(report_web: ReportWeb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_query, "PAGE_ROWS", 4)
    monkeypatch.setattr(report_pages, "PAGE_ROWS", 4)
    client, path = report_web.verified_browser(OLA)
    table = f"{path}/alerts/{reference(report_web)}"

    first = client.get(table)
    last = client.get(f"{table}?page=3")

    assert codes_listed(first.text) == ALL_CODES[:4]
    assert 'rel="next" href="?page=2"' in first.text and 'rel="prev"' not in first.text
    assert "Organisations 1 to 4" in first.text
    assert codes_listed(last.text) == ["RXJ"]
    assert 'rel="prev" href="?page=2"' in last.text and 'rel="next"' not in last.text


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("sort=note", "sort: 'note' is not one of code, name, type"),
        ("status=pending", "status: 'pending' is not one of in_progress"),
        ("as_at=31%2F12%2F2026", "as_at: '31/12/2026' is not a date and time"),
        ("as_at=2026-12-05T12:01", "as_at: the time is in the future"),
        # Near year 1 a time overflows once moved to UTC or back 30 days.
        ("as_at=0001-01-01T00:30%2B05:00", "as_at: choose a time after 2000"),
        ("as_at=0001-01-01T00:00", "as_at: choose a time after 2000"),
        ("overdue=yes", "overdue: give 1 (yes) or leave it out"),
        ("page=0", "page: a page is a whole number"),
        ("parent=R%3CX", "parent: an organisation code is 1 to 12 letters and digits"),
    ],
)
def test_a_value_the_report_does_not_understand_is_a_clear_400(
    report_web: ReportWeb, query: str, problem: str
) -> None:
    client, path = report_web.verified_browser(OLA)
    ref = reference(report_web)

    for page in (f"{path}/alerts/{ref}?{query}", f"{path}/alerts/{ref}.csv?{query}"):
        refused = client.get(page)
        assert refused.status_code == 400
        assert "The report cannot be shown that way" in refused.text
        assert problem.replace("'", "&#39;") in refused.text


def test_an_unknown_alert_is_not_found(report_web: ReportWeb) -> None:
    client, path = report_web.verified_browser(OLA)

    assert client.get(f"{path}/alerts/CC-0000").status_code == 404
    assert client.get(f"{path}/alerts/CC-0000.csv").status_code == 404
    # Not yet issued at that time.
    early = client.get(f"{path}/alerts/{reference(report_web)}?as_at=2026-11-30T09:00")
    assert early.status_code == 404


def test_closed_alerts_stay_on_the_report_for_thirty_days(report_web: ReportWeb) -> None:
    session = report_web.db()
    closed = hours(90)
    session.execute(update(Alert).values(closed_at=closed))
    session.commit()

    def listed(at: datetime) -> list[int]:
        return [a.id for a in alerts_in_report(session, as_at=at)]

    assert listed(closed + timedelta(days=29)) == [report_web.alert_id]
    assert listed(closed + timedelta(days=30)) == []


def test_an_alert_that_asks_for_no_answers_is_not_on_the_report(report_web: ReportWeb) -> None:
    session = report_web.db()
    spec = parse_alert_spec(alert_spec_data(reference="CC-5000", severity="medium"), source="t")
    issue_alert(session, spec, now=hours(1), actor="test", mail_domain="alerts.test")
    session.commit()

    assert [a.reference for a in alerts_in_report(session, as_at=hours(2))] == ["CC-4720"]


# ----------------------------------------------------------------- CSV


def read_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def test_the_csv_has_a_header_a_row_per_organisation_iso_times_and_no_formulas(
    report_web: ReportWeb,
) -> None:
    client, path = report_web.verified_browser(OLA)
    ref = reference(report_web)

    download = client.get(f"{path}/alerts/{ref}.csv")

    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{ref}-as-at-20261205T1200Z.csv"'
    )
    assert download.content.startswith("\ufeff".encode())
    header, *rows = read_csv(download.content)
    assert tuple(header) == HEADER
    by_code = {row[1]: dict(zip(header, row, strict=True)) for row in rows}
    assert sorted(by_code) == ALL_CODES and len(rows) == 9
    assert {row["alert"] for row in by_code.values()} == {ref}
    assert by_code["RXA"]["note"] == "'" + INJECTION
    assert datetime.fromisoformat(by_code["RXC"]["answered_at"]) == hours(10)
    assert date.fromisoformat(by_code["RXC"]["next_update_on"]) == date(2026, 12, 16)
    assert (by_code["RXG"]["status"], by_code["RXG"]["bounced"]) == ("", "yes")


def test_the_csv_keeps_the_tables_filters_and_time(report_web: ReportWeb) -> None:
    client, path = report_web.verified_browser(OLA)
    ref = reference(report_web)

    complete = read_csv(client.get(f"{path}/alerts/{ref}.csv?status=complete").content)[1:]
    earlier = read_csv(client.get(f"{path}/alerts.csv?as_at={EARLIER:%Y-%m-%dT%H:%M}").content)

    assert [row[1] for row in complete] == ["RXA", "RXE", "RXF"]
    statuses = {row[1]: row[5] for row in earlier[1:]}
    assert (statuses["RXE"], statuses["RXD"]) == ("in_progress", "")


def test_the_csv_is_streamed_in_chunks_and_its_session_closed_after(
    report_web: ReportWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_downloads, "CHUNK_ROWS", 2)
    client, path = report_web.verified_browser(OLA)
    pool = report_web.runtime.reader_engine.pool

    with client.stream("GET", f"{path}/alerts/{reference(report_web)}.csv") as download:
        chunks = [chunk for chunk in download.iter_raw() if chunk]

    # The header with the first two rows, then two rows a chunk.
    assert len(chunks) == 5
    assert len(read_csv(chunks[0])) == 3
    assert len(read_csv(b"".join(chunks))) == 10
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


def test_the_csv_is_refused_without_a_verified_browser(report_web: ReportWeb) -> None:
    path = report_web.link(OLA)

    for page in (f"{path}/alerts/{reference(report_web)}.csv", f"{path}/alerts.csv"):
        refused = report_web.browser().get(page)
        assert refused.status_code == 403
        assert "text/html" in refused.headers["content-type"]
        assert "RXA" not in refused.text


# ------------------------------------------------------------- looking


def test_looking_at_the_report_changes_nothing_in_the_database(report_web: ReportWeb) -> None:
    client, path = report_web.verified_browser(OLA)
    ref = reference(report_web)
    before = database_contents(report_web.engine)

    pages = [
        path,
        f"{path}?as_at=2026-12-02T15:00",
        f"{path}/alerts/{ref}?status=unable&overdue=1&sort=status&desc=1",
        f"{path}/alerts/{ref}.csv",
        f"{path}/alerts.csv",
        f"{path}/alerts/{ref}?sort=note",
    ]
    seen = [client.get(page).status_code for page in pages]
    strangers = [report_web.browser().get(page).status_code for page in pages]
    others = [report_web.browser().get(report_web.link(who)).status_code for who in (RAJ, UNA)]

    assert seen == [200, 200, 200, 200, 200, 400]
    assert strangers == [200, 200, 200, 403, 403, 200]
    assert others == [403, 403]
    assert database_contents(report_web.engine) == before

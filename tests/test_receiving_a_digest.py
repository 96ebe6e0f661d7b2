"""An auditor's digest: two auditors, two open alerts whose every number is
known (tests/support/reporting.py and tests/support/digests.py), sent by
the scheduler's digests task and the real worker through the real relay.
Each figure is in the HTML and in the text part; what changed since the
last digest follows; a digest with nothing changed is one line, and an
auditor with nothing open gets none."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select, update

from mailflow.core.models import Digest, DigestState, User
from tests.support.digests import (
    FRIDAY_8,
    OLA,
    SECOND_TITLE,
    UMA,
    WES,
    Digests,
)
from tests.support.mail import html_text, plain_text
from tests.support.reporting import LATER

SUBJECT = "Digest 1, 4 December 2026"
MONDAY_8 = FRIDAY_8 + timedelta(days=3)


def text_of(message: EmailMessage) -> str:
    return plain_text(message).replace("\r\n", "\n")


def visible_text(message: EmailMessage) -> str:
    """The HTML part's words, tags taken out and spaces collapsed."""
    html = html_text(message)
    words = re.sub(r"<[^>]+>", " ", html).replace("&middot;", "·")
    return " ".join(words.split())


@pytest.fixture
def first(digests: Digests) -> dict[str, EmailMessage]:
    """The digests the Friday 08:00 period sends, composed at 23:00 (80
    hours after CC-4720's issue, when its figures are those of
    tests/test_reporting_an_alert.py)."""
    digests.build()
    return digests.send(LATER)


def test_each_daily_auditor_gets_digest_1_and_the_weekly_one_waits(
    first: dict[str, EmailMessage],
) -> None:
    assert sorted(first) == [OLA, UMA]
    for message in first.values():
        assert message["Subject"] == SUBJECT
        assert message["X-Mailflow-Digest"] == "1"
    assert WES not in first


def test_the_text_part_carries_every_figure_of_both_alerts(
    first: dict[str, EmailMessage],
) -> None:
    text = text_of(first[OLA])

    assert text.startswith("DIGEST 1, 4 December 2026: 2 open alerts\n\nDear Ola Nwosu,\n")
    cc4720 = text[text.index("CC-4720 HIGH: ") : text.index("CC-4730 CRITICAL: ")]
    assert cc4720.splitlines()[1] == "Deadline: Thursday 3 December 2026 at 15:00 GMT (passed)"
    assert "\n".join(line.strip() for line in cc4720.splitlines()[3:15]) == (
        "In scope: 9\n"
        "Answered: 6 (67%)\n"
        "Answered within the deadline: 5 (56%)\n"
        "In progress: 1\n"
        "Complete: 3\n"
        "Not applicable: 1\n"
        "Unable: 1\n"
        "No answer: 2\n"
        "Unreachable (every email bounced): 1\n"
        "Overdue updates: 0\n"
        "Median time to first answer: 10 h\n"
        "90th percentile time to first answer: 2 d 12 h"
    )
    cc4730 = text[text.index("CC-4730 CRITICAL: ") : text.index("NOT ANSWERED: CC-4720")]
    assert cc4730.splitlines()[0] == f"CC-4730 CRITICAL: {SECOND_TITLE}"
    assert cc4730.splitlines()[1] == "Deadline: Thursday 3 December 2026 at 11:00 GMT (passed)"
    assert "\n".join(line.strip() for line in cc4730.splitlines()[3:15]) == (
        "In scope: 4\n"
        "Answered: 3 (75%)\n"
        "Answered within the deadline: 2 (50%)\n"
        "In progress: 1\n"
        "Complete: 1\n"
        "Not applicable: 0\n"
        "Unable: 1\n"
        "No answer: 1\n"
        "Unreachable (every email bounced): 0\n"
        "Overdue updates: 0\n"
        "Median time to first answer: 3 h\n"
        "90th percentile time to first answer: 1 d 6 h"
    )


def test_the_text_part_lists_who_has_not_answered_and_who_cannot(
    first: dict[str, EmailMessage],
) -> None:
    text = text_of(first[UMA])

    not_answered = text[text.index("NOT ANSWERED: CC-4720") : text.index("UNABLE TO REMEDIATE")]
    assert not_answered == (
        "NOT ANSWERED: CC-4720\n\n"
        "RXG Trust RXG\n  Parent: none\n"
        "  32 h overdue, 1 reminder sent, unreachable (every email bounced)\n\n"
        "RXH Trust RXH\n  Parent: none\n  32 h overdue, 1 reminder sent\n\n"
        "RXJ Trust RXJ\n  Parent: RXA\n  32 h overdue, 1 reminder sent\n\n"
    )
    assert (
        "UNABLE TO REMEDIATE: CC-4720\n\n"
        "RXC Castleton Mental Health NHS Foundation Trust\n"
        "  Reason: Vendor has no fix\n  Mitigations: Port closed\n"
    ) in text
    assert (
        "NOT ANSWERED: CC-4730\n\n"
        "RXC Castleton Mental Health NHS Foundation Trust\n  Parent: none\n"
        "  36 h overdue, 0 reminders sent\n"
    ) in text
    assert (
        "UNABLE TO REMEDIATE: CC-4730\n\n"
        "RXB Brookfield Community NHS Trust\n"
        "  Reason: Legacy system cannot be patched\n"
        "  Mitigations: Isolated on its own network\n"
    ) in text
    assert "WHAT CHANGED\nThis is your first digest" in text


def test_the_html_part_carries_the_same_figures(first: dict[str, EmailMessage]) -> None:
    seen = visible_text(first[OLA])

    for shown in (
        "Digest 1 · 4 December 2026",
        "CC-4720 · HIGH SEVERITY",
        "Deadline: Thursday 3 December 2026 at 15:00 GMT (passed)",
        "In scope 9 Answered 6 (67%) Answered within the deadline 5 (56%) In progress 1"
        " Complete 3 Not applicable 1 Unable 1 No answer 2"
        " Unreachable (every email bounced) 1 Overdue updates 0"
        " Median time to first answer 10 h 90th percentile time to first answer 2 d 12 h",
        f"CC-4730 · CRITICAL SEVERITY {SECOND_TITLE}",
        "In scope 4 Answered 3 (75%) Answered within the deadline 2 (50%) In progress 1"
        " Complete 1 Not applicable 0 Unable 1 No answer 1"
        " Unreachable (every email bounced) 0 Overdue updates 0"
        " Median time to first answer 3 h 90th percentile time to first answer 1 d 6 h",
        "RXG Trust RXG Parent: none 32 h overdue , 1 reminder sent, unreachable",
        "RXJ Trust RXJ Parent: RXA 32 h overdue , 1 reminder sent",
        "RXC Castleton Mental Health NHS Foundation Trust Parent: none 36 h overdue ,"
        " 0 reminders sent",
        "Reason: Legacy system cannot be patched Mitigations: Isolated on its own network",
    ):
        assert shown in seen


ALT = {
    "CC-4720": "CC-4720, 80 hours after issue: 6 of 9 organisations answered (67%), 5 within"
    " the 48-hour deadline; complete 3, in progress 1, not applicable 1, unable 1,"
    " no answer 2, unreachable 1.",
    "CC-4730": "CC-4730, 56 hours after issue: 3 of 4 organisations answered (75%), 2 within"
    " the 20-hour deadline; complete 1, in progress 1, not applicable 0, unable 1,"
    " no answer 1, unreachable 0.",
}


def test_each_alerts_chart_is_an_inline_png_the_html_refers_to_by_content_id(
    first: dict[str, EmailMessage],
) -> None:
    message = first[UMA]
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.iter_parts()
    assert (plain.get_content_type(), related.get_content_type()) == (
        "text/plain",
        "multipart/related",
    )
    html_part, *images = related.iter_parts()
    assert html_part.get_content_type() == "text/html"
    assert [image.get_content_type() for image in images] == ["image/png", "image/png"]
    html = html_text(message)
    shown = re.findall(r'<img src="cid:([^"]+)" alt="([^"]+)" width="(\d+)" height="(\d+)"', html)
    assert [(alt, width, height) for _, alt, width, height in shown] == [
        (ALT["CC-4720"], "560", "504"),
        (ALT["CC-4730"], "560", "504"),
    ]
    for image, (cid, *_) in zip(images, shown, strict=True):
        assert image["Content-ID"] == f"<{cid}>"
        assert image.get_content_disposition() == "inline"
        png = image.get_payload(decode=True)
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")
        # The PNG's own size (its IHDR chunk) is the one the HTML gives.
        assert (int.from_bytes(png[16:20]), int.from_bytes(png[20:24])) == (560, 504)
        assert html.count(f"cid:{cid}") == 1


def test_each_digest_links_to_its_own_auditors_report(
    digests: Digests, first: dict[str, EmailMessage]
) -> None:
    links = {}
    for who, message in first.items():
        (link,) = set(re.findall(r"https://mailflow\.test/report/[\w.\-]+", text_of(message)))
        assert f'href="{link}"' in html_text(message)
        links[who] = link
    assert links[OLA] != links[UMA]


def test_a_change_since_the_last_digest_is_said_alert_by_alert(
    digests: Digests, first: dict[str, EmailMessage]
) -> None:
    digests.alert_id = digests.second_alert
    digests.answer("li@itservices.example", "RXC", MONDAY_8, "complete")
    digests.alert_id = digests.first_alert
    digests.answer("hana@highmoor.example", "RXH", MONDAY_8, "in_progress")

    monday = digests.send(MONDAY_8 + timedelta(minutes=5))

    text = text_of(monday[UMA])
    assert monday[UMA]["Subject"] == "Digest 2, 7 December 2026"
    changed = text[text.index("WHAT CHANGED SINCE DIGEST 1\n") :].split("\n\n")[0]
    # By Monday RXB's update (due Friday) and RXD's (due Sunday) are overdue.
    assert changed.splitlines()[1:] == [
        "- CC-4720: answered 6 -> 7 of 9",
        "- CC-4720: statuses moved: in progress 1 -> 2, no answer 2 -> 1",
        "- CC-4720: 1 fewer organisation overdue (no answer since the deadline), 2 in all",
        "- CC-4720: 1 more organisation with an update overdue, 1 in all",
        "- CC-4730: answered 3 -> 4 of 4",
        "- CC-4730: statuses moved: complete 1 -> 2, no answer 1 -> 0",
        "- CC-4730: 1 fewer organisation overdue (no answer since the deadline), 0 in all",
        "- CC-4730: 1 more organisation with an update overdue, 1 in all",
    ]


def test_nothing_changed_since_the_last_one_is_a_one_line_email_numbered_next(
    digests: Digests, first: dict[str, EmailMessage]
) -> None:
    # Saturday is no daily period (Monday to Friday): nothing is due.
    assert digests.digest_pass(FRIDAY_8 + timedelta(days=1, hours=2)) == []
    # Monday's is the weekly auditor's first.
    assert set(digests.send(MONDAY_8)) == {OLA, UMA, WES}
    tuesday = digests.send(MONDAY_8 + timedelta(days=1))

    assert sorted(tuesday) == [OLA, UMA]
    assert tuesday[UMA]["Subject"] == "Digest 3, 8 December 2026: no changes"
    message = tuesday[OLA]
    assert message["Subject"] == "Digest 3, 8 December 2026: no changes"
    body = text_of(message).split("\n\n--\n")[0]
    assert "\n" not in body.strip()
    assert body.startswith(
        "No changes since digest 2: the figures of the 2 open alerts are as they were."
        " The report: https://mailflow.test/report/"
    )
    assert "No changes since digest 2" in visible_text(message)


def test_a_previous_digest_whose_figures_cannot_be_read_is_followed_by_a_full_one(
    digests: Digests, first: dict[str, EmailMessage]
) -> None:
    with digests.runtime.sessions.begin() as session:
        session.execute(update(Digest).values(snapshot="not json"))

    monday = digests.send(MONDAY_8)

    message = monday[OLA]
    assert message["Subject"] == "Digest 2, 7 December 2026"
    said = "The figures of digest 1 could not be read, so they are not compared"
    assert said in text_of(message)
    assert said in visible_text(message)


def test_with_nothing_open_no_digest_is_sent_and_no_number_used(
    digests: Digests, first: dict[str, EmailMessage]
) -> None:
    digests.close(digests.first_alert, FRIDAY_8 + timedelta(days=2))
    # Closed after the pass queued the digests, before the worker ran.
    assert digests.digest_pass(MONDAY_8 + timedelta(minutes=5)) == [
        "digests: daily digest for Mon 7 Dec 08:00: 2 auditor(s)",
        "digests: weekly digest for Mon 7 Dec 08:00: 1 auditor(s)",
    ]
    digests.close(digests.second_alert, MONDAY_8 + timedelta(minutes=6))
    digests.clock.now = MONDAY_8 + timedelta(minutes=10)
    digests.work()

    assert digests.new_digests() == []
    digests.session.rollback()
    rows = digests.session.execute(
        select(User.email, Digest.state, Digest.number)
        .join(User, User.id == Digest.user_id)
        .order_by(Digest.period_at, User.email)
    ).all()
    assert [tuple(row) for row in rows] == [
        (OLA, DigestState.SENT, 1),
        (UMA, DigestState.SENT, 1),
        (OLA, DigestState.SKIPPED, None),
        (UMA, DigestState.SKIPPED, None),
        (WES, DigestState.SKIPPED, None),
    ]
    # And with none open, the next pass queues none.
    assert digests.digest_pass(FRIDAY_8 + timedelta(days=4)) == []


@pytest.mark.parametrize("width", [375, 1200])
def test_the_digest_is_never_wider_than_the_screen(
    browser: Any, first: dict[str, EmailMessage], width: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.set_content(html_text(first[OLA]))
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        boxes = page.evaluate(
            "[...document.querySelectorAll('a, table, img')].map(e => {"
            " const r = e.getBoundingClientRect(); return [r.left, r.right]; })"
        )
        assert boxes
        for left, right in boxes:
            assert left >= 0 and right <= width
    finally:
        page.close()

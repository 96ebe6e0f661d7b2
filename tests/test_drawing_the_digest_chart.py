"""The digest's chart of one alert, drawn from the hand-built data set of
tests/support/reporting.py, where every number is known: a real PNG of
the size it says, alt text that states the figures, the same bytes for
the same figures, and a picture that changes when they do."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_update_spec
from mailflow.alerts.updates import publish_update
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import User
from mailflow.reports.chart import DEADLINE_COLOUR, Chart, _share_steps, alert_chart
from mailflow.reports.digest_content import AlertDigest, gather_alert
from tests.support.reporting import EARLIER, LATER, LONDON, build, hours

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The digest's email keeps under this many bytes per chart.
MAX_PNG_BYTES = 60_000
# Pixels of a column in the deadline's colour that make it the line.
LINE_PIXELS = 60


def digest_at(session: Session, settings: Settings, as_at: datetime) -> AlertDigest:
    return gather_alert(session, build(session, settings), as_at=as_at, zone=LONDON)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert png[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def chunk_kinds(png: bytes) -> list[bytes]:
    kinds, at = [], len(PNG_SIGNATURE)
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        kinds.append(kind)
        at += 12 + length
    return kinds


def pixels(chart: Chart) -> NDArray[np.float32]:
    return np.asarray(imread(io.BytesIO(chart.png), format="png"))[..., :3]


def deadline_line_x(chart: Chart) -> float | None:
    """Where the deadline's line is: the columns painted exactly in its
    colour for much of the plot's height (a dashed line from top to
    bottom, where its label reaches no more than a letter's height)."""
    colour = np.array(to_rgb(DEADLINE_COLOUR), dtype=np.float32)
    exact = np.all(np.abs(pixels(chart) - colour) < 1 / 255, axis=2)
    columns = np.nonzero(exact.sum(axis=0) >= LINE_PIXELS)[0]
    return float(columns.mean()) if columns.size else None


def test_the_chart_is_a_png_of_the_size_it_says(session: Session, settings: Settings) -> None:
    digest = digest_at(session, settings, LATER)

    chart = alert_chart(digest)
    phone = alert_chart(digest, width_px=375)

    assert (chart.width, chart.height) == (600, 540)
    assert png_size(chart.png) == (600, 540)
    assert png_size(phone.png) == (phone.width, phone.height) == (375, 338)
    assert pixels(chart).shape == (540, 600, 3)
    assert len(chart.png) < MAX_PNG_BYTES


def test_the_alt_text_states_each_figure_of_the_alert(session: Session, settings: Settings) -> None:
    digest = digest_at(session, settings, LATER)

    alt = alert_chart(digest).alt

    assert alt == (
        f"{digest.figures.reference}, 80 hours after issue: 6 of 9 organisations answered "
        "(67%), 5 within the 48-hour deadline; complete 3, in progress 1, not applicable 1, "
        "unable 1, no answer 2, unreachable 1."
    )


def test_before_the_deadline_the_alt_text_says_how_long_is_left(
    session: Session, settings: Settings
) -> None:
    digest = digest_at(session, settings, EARLIER)

    chart = alert_chart(digest)

    assert chart.alt == (
        f"{digest.figures.reference}, 24 hours after issue: 4 of 9 organisations answered "
        "(44%), 4 within the 48-hour deadline (24 hours left); complete 1, in progress 2, "
        "not applicable 0, unable 1, no answer 4, unreachable 1."
    )
    # The axis runs on to the deadline, so its line is drawn, at the end.
    line_x = deadline_line_x(chart)
    assert line_x is not None and line_x > chart.width * 0.9


def test_an_alert_nobody_has_answered_yet_is_drawn_at_nought(
    session: Session, settings: Settings
) -> None:
    digest = digest_at(session, settings, hours(1))

    chart = alert_chart(digest)

    assert digest.answered_by_hour == ()
    assert chart.alt.endswith(
        "1 hour after issue: 0 of 9 organisations answered (0%), 0 within the 48-hour "
        "deadline (47 hours left); complete 0, in progress 0, not applicable 0, unable 0, "
        "no answer 8, unreachable 1."
    )
    assert png_size(chart.png) == (600, 540)


def test_an_alert_with_no_organisations_in_scope_says_so(
    session: Session, settings: Settings
) -> None:
    digest = digest_at(session, settings, LATER)
    figures = replace(
        digest.figures,
        in_scope=0,
        answered=0,
        answered_within_deadline=0,
        complete=0,
        in_progress=0,
        not_applicable=0,
        unable=0,
        no_answer=0,
        unreachable=0,
    )

    chart = alert_chart(replace(digest, figures=figures, answered_by_hour=()))

    assert chart.alt == f"{figures.reference}, 80 hours after issue: no organisations in scope."
    assert png_size(chart.png) == (600, 540)


def test_an_alert_open_for_weeks_fits_the_same_frame(session: Session, settings: Settings) -> None:
    digest = digest_at(session, settings, hours(24 * 21))

    chart = alert_chart(digest)

    assert "504 hours after issue: 6 of 9 organisations answered" in chart.alt
    assert png_size(chart.png) == (600, 540)
    assert len(chart.png) < MAX_PNG_BYTES


def test_the_same_figures_give_the_same_bytes(session: Session, settings: Settings) -> None:
    digest = digest_at(session, settings, LATER)

    assert alert_chart(digest).png == alert_chart(digest).png
    # Nothing that names the software or the time of drawing.
    assert set(chunk_kinds(alert_chart(digest).png)) == {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def test_the_picture_changes_when_the_figures_do(session: Session, settings: Settings) -> None:
    digest = digest_at(session, settings, LATER)
    one_more = replace(
        digest.figures,
        answered=7,
        complete=4,
        no_answer=1,
    )

    before = alert_chart(digest)
    after = alert_chart(replace(digest, figures=one_more))

    assert before.png != after.png
    assert not np.array_equal(pixels(before), pixels(after))


def test_the_deadline_line_moves_left_as_the_alert_runs_on(
    session: Session, settings: Settings
) -> None:
    alert_id = build(session, settings)
    at_80_hours = gather_alert(session, alert_id, as_at=LATER, zone=LONDON)
    three_weeks_on = gather_alert(session, alert_id, as_at=hours(24 * 21), zone=LONDON)

    first = deadline_line_x(alert_chart(at_80_hours))
    second = deadline_line_x(alert_chart(three_weeks_on))

    # 48 of 80 hours is past the middle; 48 of 504, near the start.
    assert first is not None and second is not None
    assert second < 0.3 * 600 < 0.5 * 600 < first


def test_it_draws_without_a_writable_home(tmp_path: Path) -> None:
    """matplotlib keeps its font list under the home directory; where it
    cannot, the chart must still be drawn."""
    home = tmp_path / "home"
    home.write_text("a file, so nothing can be made under it")
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"}
    }
    environment["HOME"] = str(home)

    result = subprocess.run(
        [sys.executable, "-c", DRAW_ONE],
        env=environment,
        capture_output=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout[:8] == PNG_SIGNATURE
    assert png_size(result.stdout) == (600, 540)


DRAW_ONE = """
import sys
from datetime import UTC, datetime, timedelta
from mailflow.reports.chart import alert_chart
from mailflow.reports.digest_content import AlertDigest
from mailflow.reports.figures import AlertFigures

issued = datetime(2026, 12, 1, 15, tzinfo=UTC)
figures = AlertFigures(
    "MF-1", "Title", "high", issued, issued + timedelta(hours=48), None,
    issued + timedelta(hours=80), 3, 2, 1, 1, 1, 0, 0, 1, 0, 0, None, None, issued,
)
digest = AlertDigest(figures, (), 1, (), 0, ((2, 1), (50, 2)))
sys.stdout.buffer.write(alert_chart(digest).png)
"""


def test_a_width_outside_what_an_email_needs_is_refused(
    session: Session, settings: Settings
) -> None:
    digest = digest_at(session, settings, LATER)

    with pytest.raises(ValueError, match="300 to 1800 pixels wide"):
        alert_chart(digest, width_px=20_000)


def test_after_an_update_asking_again_the_chart_counts_hours_from_the_update(
    session: Session, settings: Settings
) -> None:
    alert_id = build(session, settings)
    asking_again = parse_update_spec(
        {"summary": "Not enough.", "answer_again": True}, source="test"
    )
    publish_update(session, "CC-4720", asking_again, now=hours(90), actor="test")
    fay = session.scalars(select(User.id).where(User.email == "fay@fenwick.example")).one()
    record_answers(
        session,
        settings,
        user_id=fay,
        alert_id=alert_id,
        answers=[AnswerValue("RXF", AnswerStatus.IN_PROGRESS)],
        via="link",
        now=hours(93),
    )
    session.commit()

    digest = gather_alert(session, alert_id, as_at=hours(95), zone=LONDON)
    chart = alert_chart(digest)

    assert digest.figures.round_started_at == hours(90)
    assert digest.answered_by_hour == ((3, 1),)
    assert chart.alt.startswith(
        "CC-4720, 5 hours after the update asking again: 1 of 9 organisations answered (11%)"
    )


def test_each_running_total_is_drawn_at_the_end_of_its_hour_never_earlier() -> None:
    # One answered in hour 2, another 30 minutes after a 48-hour deadline
    # (hour 48): drawn at 3 and at 49, not on the deadline line.
    xs, ys = _share_steps(((2, 1), (48, 2)), in_scope=4, now=60)

    assert xs == [0.0, 3.0, 49.0, 60.0]
    assert ys == [0.0, 25.0, 50.0, 50.0]
    # Never beyond now.
    assert _share_steps(((48, 2),), in_scope=4, now=48.5)[0] == [0.0, 48.5, 48.5]

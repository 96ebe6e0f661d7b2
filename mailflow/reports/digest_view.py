"""How a digest shows one alert's figures: the rows of its table (the same
figures its chart draws), percentages of the organisations in scope, and
times to first answer as a person says them ("5 h", "1 d 3 h").  Pure
formatting; the figures come from reports/figures.py unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from mailflow.reports.digest_content import AlertDigest, Unable, Unanswered
from mailflow.reports.figures import AlertFigures
from mailflow.reports.wording import human_duration, percent


@dataclass(frozen=True)
class FigureRow:
    label: str
    value: str
    # Rows shown in bold: the ones an auditor looks for first.
    strong: bool = False


def figure_rows(f: AlertFigures) -> list[FigureRow]:
    """The alert's figures in the order the email and its text part list
    them; the chart draws the same ones."""
    return [
        FigureRow("In scope", str(f.in_scope)),
        FigureRow("Answered", f"{f.answered} ({percent(f.answered, f.in_scope)})", strong=True),
        FigureRow(
            "Answered within the deadline",
            f"{f.answered_within_deadline} ({percent(f.answered_within_deadline, f.in_scope)})",
        ),
        FigureRow("In progress", str(f.in_progress)),
        FigureRow("Complete", str(f.complete)),
        FigureRow("Not applicable", str(f.not_applicable)),
        FigureRow("Unable", str(f.unable)),
        FigureRow("No answer", str(f.no_answer), strong=True),
        FigureRow("Unreachable (every email bounced)", str(f.unreachable)),
        FigureRow("Overdue updates", str(f.overdue_updates)),
        FigureRow("Median time to first answer", human_duration(f.median_to_first_answer)),
        FigureRow("90th percentile time to first answer", human_duration(f.p90_to_first_answer)),
    ]


@dataclass(frozen=True)
class ChartImage:
    """An alert's chart as the HTML part refers to it: the inline image's
    Content-ID (without angle brackets), its alt text and pixel size."""

    cid: str
    alt: str
    width: int
    height: int


@dataclass(frozen=True)
class AlertView:
    figures: AlertFigures
    rows: list[FigureRow]
    deadline_passed: bool
    unanswered: tuple[Unanswered, ...]
    # How many more there are than the email lists (the page has them all).
    unanswered_more: int
    unable: tuple[Unable, ...]
    unable_more: int
    chart: ChartImage | None


def alert_view(digest: AlertDigest, chart: ChartImage | None) -> AlertView:
    f = digest.figures
    return AlertView(
        figures=f,
        rows=figure_rows(f),
        deadline_passed=f.as_at >= f.deadline_at,
        unanswered=digest.unanswered,
        unanswered_more=max(0, digest.unanswered_total - len(digest.unanswered)),
        unable=digest.unable,
        unable_more=max(0, digest.unable_total - len(digest.unable)),
        chart=chart,
    )

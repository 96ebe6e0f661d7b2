"""The digest's chart of one alert, as a PNG: above, the share of the
organisations in scope that have answered, hour by hour since the issue,
with the deadline marked; below, a bar of their current statuses with
each count in the legend.  PNG because Outlook and most webmail show
neither SVG nor ``data:`` images.

matplotlib is imported when a chart is drawn, not when this module is, so
the command line does not pay for it; only its object-oriented API is
used (a Figure on an Agg canvas), since pyplot keeps global state that is
not thread-safe and holds on to figures.  matplotlib finds a writable
cache for its font list itself (a temporary one when the home directory
is not writable)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailflow.reports.wording import percent

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mailflow.reports.digest_content import AlertDigest
    from mailflow.reports.figures import AlertFigures

# Sizes are for a 600-pixel-wide chart and scale with the width, so the
# text stays readable when a phone shows the chart 375 pixels wide.
BASE_WIDTH_PX = 600
DPI = 100
HEIGHT_RATIO = 0.9
MIN_WIDTH_PX = 300
MAX_WIDTH_PX = 1800
FONT_PT = 14
TITLE_PT = 16
FONT = "DejaVu Sans"  # shipped with matplotlib: the same glyphs everywhere
SECONDS_PER_HOUR = 3600
PALETTE_COLOURS = 256
# Okabe and Ito's palette, told apart with the commonest colour blindness.
LINE_COLOUR = "#0072B2"
DEADLINE_COLOUR = "#D55E00"
# Its label a shade darker: 5.8 to 1 against white, where the line's
# colour has only 3.9.
DEADLINE_TEXT_COLOUR = "#A84A00"
TEXT_COLOUR = "#222222"
GRID_COLOUR = "#DDDDDD"
# The bar's width, and the width of a digit, in pixels of a 600-pixel
# chart: a count is written on its part of the bar only if it fits.
BAR_PX = 530
DIGIT_PX = 12
LABEL_PADDING_PX = 10
# Tick spacings in hours, the first that gives no more than MAX_TICKS.
TICK_STEPS = (1, 2, 3, 6, 12, 24, 48, 72, 96, 168)
MAX_TICKS = 6
HOURS_PER_WEEK = 168


@dataclass(frozen=True)
class Status:
    label: str
    colour: str
    # Whether its count, written on the bar, needs white to be read
    # (black on the rest has a contrast ratio of at least 6 to 1).
    dark: bool


# In the bar's order, left to right: done first, silent last.
STATUSES = (
    Status("complete", "#009E73", dark=False),
    Status("in progress", "#56B4E9", dark=False),
    Status("not applicable", "#BBBBBB", dark=False),
    Status("unable", "#E69F00", dark=False),
    Status("no answer", "#CC79A7", dark=False),
    Status("unreachable", "#000000", dark=True),
)


@dataclass(frozen=True)
class Chart:
    png: bytes
    alt: str  # alt text that states the figures
    width: int  # pixels
    height: int


def alert_chart(digest: AlertDigest, *, width_px: int = BASE_WIDTH_PX) -> Chart:
    if not MIN_WIDTH_PX <= width_px <= MAX_WIDTH_PX:
        raise ValueError(f"a chart is {MIN_WIDTH_PX} to {MAX_WIDTH_PX} pixels wide, not {width_px}")
    height_px = round(width_px * HEIGHT_RATIO)
    return Chart(
        png=_draw(digest, width_px, height_px),
        alt=alt_text(digest.figures),
        width=width_px,
        height=height_px,
    )


def status_counts(figures: AlertFigures) -> tuple[int, ...]:
    """The count of each of STATUSES, in its order."""
    return (
        figures.complete,
        figures.in_progress,
        figures.not_applicable,
        figures.unable,
        figures.no_answer,
        figures.unreachable,
    )


def hours_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / SECONDS_PER_HOUR


def _hours_text(hours: float) -> str:
    return f"{hours:.0f}" if hours == round(hours) else f"{hours:.1f}"


def _hours_phrase(hours: float) -> str:
    return f"{_hours_text(hours)} hour{'' if hours == 1 else 's'}"


def alt_text(f: AlertFigures) -> str:
    """One sentence with every figure the chart shows."""
    now = hours_between(f.round_started_at, f.as_at)
    since = "issue" if f.round_started_at == f.issued_at else "the update asking again"
    head = f"{f.reference}, {_hours_phrase(max(now, 0))} after {since}"
    if f.in_scope == 0:
        return f"{head}: no organisations in scope."
    deadline = hours_between(f.round_started_at, f.deadline_at)
    left = deadline - now
    within = f"{f.answered_within_deadline} within the {_hours_text(deadline)}-hour deadline"
    if left > 0:
        within += f" ({_hours_phrase(left)} left)"
    statuses = ", ".join(
        f"{status.label} {count}" for status, count in zip(STATUSES, status_counts(f), strict=True)
    )
    return (
        f"{head}: {f.answered} of {f.in_scope} organisations answered "
        f"({percent(f.answered, f.in_scope)}), {within}; {statuses}."
    )


def _draw(digest: AlertDigest, width_px: int, height_px: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale = width_px / BASE_WIDTH_PX
    figure = Figure(
        figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white", layout="constrained"
    )
    FigureCanvasAgg(figure)
    figure.suptitle(
        digest.figures.reference,
        x=0.02,
        ha="left",
        fontsize=TITLE_PT * scale,
        fontfamily=FONT,
        fontweight="bold",
        color=TEXT_COLOUR,
    )
    share, statuses = figure.subplots(2, 1, height_ratios=(3, 2))
    _draw_share(share, digest, scale)
    _draw_statuses(statuses, digest.figures, scale)
    rgba = io.BytesIO()
    figure.savefig(rgba, format="rgba", dpi=DPI)
    return _small_png(rgba.getvalue(), width_px, height_px)


def _small_png(rgba: bytes, width_px: int, height_px: int) -> bytes:
    """The picture in at most 256 colours, which it barely uses (flat
    fills; the rest is anti-aliasing): a third of the bytes of matplotlib's
    own PNG.  Median cut keeps the flat colours exact, and neither it nor
    the PNG (written without text, time or resolution chunks) varies
    between runs."""
    from PIL import Image

    picture = Image.frombytes("RGBA", (width_px, height_px), rgba)
    flat = picture.convert("RGB").quantize(
        PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    flat.save(out, format="png", optimize=True)
    return out.getvalue()


def _style(axes: Axes, scale: float) -> None:
    axes.set_facecolor("white")
    axes.tick_params(labelsize=FONT_PT * scale, labelfontfamily=FONT, colors=TEXT_COLOUR)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def _draw_share(axes: Axes, digest: AlertDigest, scale: float) -> None:
    f = digest.figures
    _style(axes, scale)
    # Answers count from the round's start: the issue, or an update that
    # asked for them again.
    now = max(hours_between(f.round_started_at, f.as_at), 0.0)
    deadline = hours_between(f.round_started_at, f.deadline_at)
    end = max(now, deadline, 1.0)
    title = f"answered: {f.answered} of {f.in_scope}"
    if f.in_scope:
        title += f" ({percent(f.answered, f.in_scope)})"
        xs, ys = _share_steps(digest.answered_by_hour, f.in_scope, now)
        axes.step(xs, ys, where="post", color=LINE_COLOUR, linewidth=3 * scale)
        axes.plot([xs[-1]], [ys[-1]], "o", color=LINE_COLOUR, markersize=7 * scale)
    else:
        _note(axes, "No organisations in scope", scale)
    _mark_deadline(axes, deadline, end, scale)
    axes.set_title(title, loc="left", fontsize=TITLE_PT * scale, fontfamily=FONT, pad=8 * scale)
    axes.set_xlim(0, end * 1.02)
    axes.set_ylim(0, 105)
    axes.set_yticks([0, 50, 100], ["0%", "50%", "100%"])
    axes.set_xticks(_hour_ticks(end))
    since = "issue" if f.round_started_at == f.issued_at else "the update asking again"
    axes.set_xlabel(f"hours since {since}", fontsize=FONT_PT * scale, fontfamily=FONT)
    axes.grid(axis="y", color=GRID_COLOUR, linewidth=scale)


def _share_steps(
    answered_by_hour: tuple[tuple[int, int], ...], in_scope: int, now: float
) -> tuple[list[float], list[float]]:
    """The step line's corners: none answered at the issue, then each
    hour's running total as a percentage, held until now.  A total is
    drawn at the end of its hour (it counts those who answered by then),
    so an answer is never shown earlier than it came: one 30 minutes
    after the deadline is not drawn on it."""
    xs: list[float] = [0.0]
    ys: list[float] = [0.0]
    for hour, answered in answered_by_hour:
        xs.append(float(min(max(hour + 1, 0), now)))
        ys.append(100 * answered / in_scope)
    xs.append(now)
    ys.append(ys[-1])
    return xs, ys


def _mark_deadline(axes: Axes, deadline: float, end: float, scale: float) -> None:
    """A dashed line, labelled on the side with more room."""
    axes.axvline(deadline, color=DEADLINE_COLOUR, linewidth=2.5 * scale, linestyle="--")
    right = deadline < end / 2
    axes.annotate(
        f"deadline {_hours_text(deadline)} h",
        xy=(deadline, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=((8 if right else -8) * scale, 0),
        textcoords="offset points",
        ha="left" if right else "right",
        va="top",
        fontsize=FONT_PT * scale,
        fontfamily=FONT,
        color=DEADLINE_TEXT_COLOUR,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
    )


def _hour_ticks(end: float) -> list[int]:
    step = next(
        (s for s in TICK_STEPS if end / s <= MAX_TICKS),
        HOURS_PER_WEEK * -(-int(end) // (HOURS_PER_WEEK * MAX_TICKS)),
    )
    return list(range(0, int(end) + 1, step))


def _note(axes: Axes, text: str, scale: float) -> None:
    axes.text(
        0.5,
        0.5,
        text,
        transform=axes.transAxes,
        ha="center",
        va="center",
        fontsize=FONT_PT * scale,
        fontfamily=FONT,
        color=TEXT_COLOUR,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 2},
        zorder=3,
    )


def _draw_statuses(axes: Axes, f: AlertFigures, scale: float) -> None:
    """One bar split by status, each part with its count written on it
    where it fits; the legend names every status with its count, so no
    part is known by its colour alone."""
    _style(axes, scale)
    axes.set_axis_off()
    axes.set_title("status now", loc="left", fontsize=FONT_PT * scale, fontfamily=FONT)
    axes.set_xlim(0, max(f.in_scope, 1))
    axes.set_ylim(-0.5, 0.5)
    left = 0
    for status, count in zip(STATUSES, status_counts(f), strict=True):
        axes.barh(
            0,
            count,
            left=left,
            height=0.9,
            color=status.colour,
            edgecolor="white",
            linewidth=1.5 * scale,
            label=f"{status.label} {count}",
        )
        if _fits(str(count), count / max(f.in_scope, 1)):
            axes.text(
                left + count / 2,
                0,
                str(count),
                ha="center",
                va="center",
                fontsize=FONT_PT * scale,
                fontfamily=FONT,
                color="white" if status.dark else "black",
            )
        left += count
    axes.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=2,
        frameon=False,
        prop={"family": FONT, "size": FONT_PT * scale},
        handlelength=1.0,
        columnspacing=1.2,
    )


def _fits(label: str, share: float) -> bool:
    return share * BAR_PX >= len(label) * DIGIT_PX + LABEL_PADDING_PX

"""Rendering emails from ``templates/email/NAME/`` (subject.txt, body.txt,
body.html).  A function builds the context; this module only renders."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from mailflow.config import Settings

# This module is mailflow/core/mail/templates.py: the package is two folders
# up, and the source tree three.
PACKAGE_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SOURCE_TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


def template_root() -> Path:
    """The templates inside an installed package, else those of the source
    tree (an editable install or a checkout)."""
    for root in (PACKAGE_TEMPLATES, SOURCE_TEMPLATES):
        if (root / "email").is_dir():
            return root
    raise RuntimeError(f"email templates not found in {PACKAGE_TEMPLATES} or {SOURCE_TEMPLATES}")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """'1 organisation', '2 organisations': a count with its noun agreeing."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def shorten(text: str, width: int) -> str:
    """The text in at most ``width`` characters, cut at a word where one is
    near the end, with "..." when anything was cut.  Three dots rather than
    an ellipsis character: an ASCII subject needs no encoded words, which
    some clients show with a stray space where the line was folded."""
    text = " ".join(text.split())
    width = max(width, 12)
    if len(text) <= width:
        return text
    cut = text[: width - 3]
    if " " in cut[width // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-") + "..."


_LIST_ITEM = re.compile(r"^(?:[-*\u2022]|\d{1,3}[.)])\s")


def paragraphs(text: str) -> list[list[str]]:
    """Text written with hard line breaks, as paragraphs of lines to show in
    HTML: blank lines separate paragraphs, and the lines of a paragraph are
    joined so that it flows to the width of the screen, except that each
    list item ("- ", "* ", "1. ") keeps a line of its own."""
    result: list[list[str]] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines: list[str] = []
        for line in block.splitlines():
            line = line.strip()
            if lines and not _LIST_ITEM.match(line):
                lines[-1] = f"{lines[-1]} {line}"
            else:
                lines.append(line)
        if lines:
            result.append(lines)
    return result


def short_time(value: datetime, zone: ZoneInfo) -> str:
    """'Tue 1 Dec 14:00' in the service's time zone: short enough for a
    subject line on a phone."""
    local = value.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def format_time(value: datetime, zone: ZoneInfo) -> str:
    """'Friday 28 November 2026 at 09:00 GMT' in the service's time zone."""
    local = value.astimezone(zone)
    return f"{local:%A} {local.day} {local:%B %Y} at {local:%H:%M} {local.tzname()}"


@cache
def environment(zone_name: str) -> jinja2.Environment:
    root = template_root() / "email"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates do not change while mailflow runs; checking their
        # files on every render was a measurable cost of fan-out.
        auto_reload=False,
    )
    zone = ZoneInfo(zone_name)
    env.filters["local_time"] = lambda value: format_time(value, zone)
    env.filters["short_time"] = lambda value: short_time(value, zone)
    env.filters["shorten"] = shorten
    env.filters["paragraphs"] = paragraphs
    env.filters["counted"] = counted
    return env


def render_email(name: str, context: dict[str, object], *, zone_name: str) -> RenderedEmail:
    env = environment(zone_name)
    subject = env.get_template(f"{name}/subject.txt").render(context)
    return RenderedEmail(
        subject=" ".join(subject.split()),
        text=env.get_template(f"{name}/body.txt").render(context),
        html=env.get_template(f"{name}/body.html").render(context),
    )


def render_service_email(
    settings: Settings, name: str, context: dict[str, object]
) -> RenderedEmail:
    """Render an email with what every email shows: the service's name and,
    in the footer, whom to write to with a question."""
    common: dict[str, object] = {
        "service_name": settings.service_name,
        "help_email": settings.help_email,
    }
    return render_email(name, common | context, zone_name=settings.timezone)
